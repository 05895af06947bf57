//! `lomob check`: the command line around [`crate::check`].

use std::io::Write;

use anyhow::bail;
use lomob_backends::{ByteSize, ErrorKind};
use serde::Serialize;

use super::args::CheckArgs;
use super::output::{self, Table};
use super::Context;
use crate::alert::Ping;
use crate::check::{self, local, CheckOptions, PartReport, SiteCheck};
use crate::exit::{self, UsageError};
use crate::site::Site;

#[derive(Serialize)]
struct Report {
    dry_run: bool,
    sites: Vec<SiteCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<PartReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    estimate: Vec<check::Estimate>,
    /// `--dry-run --local`: the bytes the local part would read.
    #[serde(skip_serializing_if = "Option::is_none")]
    local_budget_bytes: Option<u64>,
}

pub fn run(ctx: &Context, a: CheckArgs) -> anyhow::Result<u8> {
    let all_parts = !a.stage && !a.archive && !a.local;
    let opts = CheckOptions {
        stage: a.stage || all_parts,
        archive: a.archive || all_parts,
        deep: a.deep,
        repair: a.repair,
    };
    let local = a.local || all_parts;
    let names = if opts.stage || opts.archive || a.site.is_some() || a.all {
        super::sync_cmd::pick_sites(ctx, a.site.as_deref(), a.all)?
    } else {
        Vec::new()
    };
    if a.repair && a.dry_run {
        bail!(UsageError(
            "--repair and --dry-run do not go together".into()
        ));
    }
    let budget = match &ctx.config.config.library.local_budget {
        Some(b) => local::Budget::parse(b).map_err(UsageError)?,
        None => local::Budget::PerDay(0.05),
    };
    let m = if a.dry_run {
        ctx.open_manifest()?
    } else {
        super::alerts::open_for_run(ctx, &names, "check")?
    };
    let mut report = Report {
        dry_run: a.dry_run,
        sites: Vec::new(),
        local: None,
        estimate: Vec::new(),
        local_budget_bytes: None,
    };
    let sites: Vec<Site> = names
        .iter()
        .map(|n| Ok(Site::open(n, ctx.site_config(n)?)?))
        .collect::<anyhow::Result<_>>()?;
    if a.dry_run {
        for site in &sites {
            report.estimate.push(check::estimate(&m, site, opts)?);
        }
        if local {
            let library: u64 = m
                .files()
                .filter_map(|kv| kv.ok())
                .filter(|(_, _, f)| !f.is_deleted())
                .map(|(_, _, f)| f.size)
                .sum();
            report.local_budget_bytes = Some(budget.bytes(library, 1.0));
        }
        return print(ctx, &report);
    }
    super::alerts::ping(ctx, &names, Ping::Start, "lomob check started");
    if opts.stage || opts.archive {
        let rt = super::sync_cmd::runtime()?;
        for site in &sites {
            report
                .sites
                .push(rt.block_on(check::check_site(&m, site, opts))?);
        }
    }
    if local {
        let p = local::check(&m, budget)?;
        p.record(&m, local::RECORD_SITE)?;
        report.local = Some(p);
    }
    let code = print(ctx, &report)?;
    if let Err(e) = super::alerts::after_check(ctx, &m, &report.sites, report.local.as_ref()) {
        tracing::error!("alerts: {e:#}");
    }
    let summary = serde_json::to_string_pretty(&report).unwrap_or_default();
    let what = if code == exit::SUCCESS {
        Ping::Success
    } else {
        Ping::Fail
    };
    super::alerts::ping(ctx, &names, what, &summary);
    Ok(code)
}

fn parts(r: &Report) -> impl Iterator<Item = (&str, &PartReport)> {
    r.sites
        .iter()
        .flat_map(|s| s.parts.iter().map(move |p| (s.site.as_str(), p)))
        .chain(r.local.iter().map(|p| ("(library)", p)))
}

/// Problems found: 6. Could not check: 5 when every failure was transient, else 1. Clean: 0.
fn code(r: &Report) -> u8 {
    let all: Vec<&PartReport> = parts(r).map(|(_, p)| p).collect();
    if all.iter().any(|p| !p.findings.is_empty()) {
        return exit::INTEGRITY;
    }
    let errors: Vec<ErrorKind> = all
        .iter()
        .filter_map(|p| p.error.as_ref().map(|e| e.kind))
        .collect();
    if errors.is_empty() {
        exit::SUCCESS
    } else if errors.iter().all(|k| *k == ErrorKind::Transient) {
        exit::TRANSIENT
    } else {
        exit::for_kind(errors[0]).max(exit::FAILURE)
    }
}

fn print(ctx: &Context, r: &Report) -> anyhow::Result<u8> {
    if ctx.json {
        output::json(r)?;
        return Ok(if r.dry_run { exit::SUCCESS } else { code(r) });
    }
    let mut out = super::output::stdout();
    if r.dry_run {
        writeln!(out, "dry run: nothing was sent")?;
        let mut t = Table::new(&["SITE", "LIST", "HEAD", "GET", "GET BYTES", "COST"])
            .right(&[1, 2, 3, 4, 5]);
        for e in &r.estimate {
            t.row(vec![
                e.site.clone(),
                e.list.to_string(),
                e.head.to_string(),
                e.get.to_string(),
                ByteSize(e.get_bytes).to_string(),
                format!("${:.6}", e.usd),
            ]);
        }
        t.print(&mut out)?;
        if let Some(b) = r.local_budget_bytes {
            writeln!(
                out,
                "the library check would re-read up to {} of local files",
                ByteSize(b)
            )?;
        }
        return Ok(exit::SUCCESS);
    }
    let mut t = Table::new(&["SITE", "PART", "RESULT", "LOOKED AT", "READ"]).right(&[3, 4]);
    for (site, p) in parts(r) {
        let result = match (&p.error, p.findings.len()) {
            (Some(_), _) => "could not check".to_string(),
            (None, 0) => "clean".to_string(),
            (None, n) => format!("{n} problem{}", if n == 1 { "" } else { "s" }),
        };
        t.row(vec![
            site.to_string(),
            p.part.to_string(),
            result,
            p.looked_at.to_string(),
            ByteSize(p.read_bytes).to_string(),
        ]);
    }
    t.print(&mut out)?;
    for (site, p) in parts(r) {
        if let Some(e) = &p.error {
            writeln!(out, "{site} {}: could not check: {}", p.part, e.message)?;
        }
        for f in &p.findings {
            writeln!(out, "{site} {}: {}: {}", p.part, f.what, f.message)?;
            if let Some(fix) = &f.fix {
                writeln!(out, "  fix: {fix}")?;
            }
        }
        for x in &p.repaired {
            writeln!(out, "{site} {}: repaired: {x}", p.part)?;
        }
        for n in &p.notes {
            writeln!(out, "{site} {}: {n}", p.part)?;
        }
    }
    for s in &r.sites {
        writeln!(
            out,
            "{}: {} LIST, {} HEAD, {} GET, {} POST: ${:.6}",
            s.site, s.requests.list, s.requests.head, s.requests.get, s.requests.post, s.cost_usd
        )?;
    }
    Ok(code(r))
}

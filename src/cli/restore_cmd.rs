//! `lomob restore` and `lomob recover`: the command line around [`crate::restore`].

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use lomob_backends::{ByteSize, ErrorKind};

use super::args::{RecoverArgs, RestoreArgs};
use super::output::{self, Table};
use super::Context;
use crate::exit::{self, UsageError};
use crate::restore::{self, recover, thaw, RestoreOptions, RestoreReport, When};
use crate::site::Site;

pub fn run(ctx: &Context, a: RestoreArgs) -> anyhow::Result<u8> {
    let names = match &a.site {
        Some(s) => super::sync_cmd::pick_sites(ctx, Some(s), false)?,
        None => super::sync_cmd::pick_sites(ctx, None, true)?,
    };
    let when = match (&a.at, a.version) {
        (Some(d), _) => When::At(parse_date(d)?),
        (None, Some(n)) => When::Version(n as usize),
        (None, None) => When::Current,
    };
    let to = std::path::absolute(&a.to)
        .with_context(|| format!("cannot resolve the folder {}", a.to.display()))?;
    let opts = RestoreOptions {
        to,
        patterns: a
            .paths
            .iter()
            .map(|p| crate::platform::names::os_bytes(p).into_owned())
            .collect(),
        when,
        deleted: a.deleted,
        dry_run: a.dry_run,
        overwrite: a.overwrite,
        wait: a.wait,
        tier: a.tier.as_deref().and_then(thaw::parse_tier),
        progress: ctx.progress,
        command: command_line(),
    };
    let m = ctx.open_manifest()?;
    if m.is_empty() {
        bail!(UsageError(format!(
            "the manifest at {} is empty: on a new machine, run `lomob recover --site NAME` first",
            ctx.db.display()
        )));
    }
    let sites = open_sites(ctx, &names)?;
    let rt = super::sync_cmd::runtime()?;
    let report = rt
        .block_on(restore::restore(m, sites, &opts))
        .map_err(|e| match e {
            restore::RestoreError::Usage(msg) => UsageError(msg).into(),
            e => anyhow::Error::new(e),
        })?;
    if ctx.json {
        output::json(&report)?;
    } else if report.dry_run {
        print_dry_run(&report)?;
    } else {
        print_report(&report)?;
    }
    Ok(code(&report))
}

fn open_sites(ctx: &Context, names: &[String]) -> anyhow::Result<Vec<Arc<Site>>> {
    names
        .iter()
        .map(|n| {
            let cfg = ctx.site_config(n)?;
            Ok(Arc::new(Site::open(n, cfg)?))
        })
        .collect()
}

/// The exit code: the worst thing that happened.
fn code(r: &RestoreReport) -> u8 {
    let kinds: Vec<ErrorKind> = r.failed.iter().filter_map(|f| f.kind).collect();
    if kinds.contains(&ErrorKind::Integrity) {
        exit::INTEGRITY
    } else if !r.failed.is_empty() {
        if kinds.iter().all(|k| *k == ErrorKind::Transient) {
            exit::TRANSIENT
        } else {
            exit::FAILURE
        }
    } else if !r.missing.is_empty() {
        exit::FAILURE
    } else if !r.waiting.is_empty() {
        exit::WAITING
    } else if !r.left_alone.is_empty() || !r.refused.is_empty() || !r.unmatched.is_empty() {
        exit::PARTIAL
    } else {
        exit::SUCCESS
    }
}

/// `--at`: a date (the end of that day), a local date and time, or an RFC 3339 instant.
fn parse_date(s: &str) -> anyhow::Result<i64> {
    use jiff::civil::{Date, DateTime};
    let tz = jiff::tz::TimeZone::system();
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    let local = if let Ok(dt) = s.parse::<DateTime>() {
        Some(dt)
    } else if let Ok(d) = s.parse::<Date>() {
        Some(d.at(23, 59, 59, 0))
    } else {
        None
    };
    match local.and_then(|dt| dt.to_zoned(tz).ok()) {
        Some(z) => Ok(z.timestamp().as_second()),
        None => bail!(UsageError(format!(
            "--at {s:?} is not a date: use 2024-05-01, 2024-05-01T18:30 or 2024-05-01T18:30:00Z"
        ))),
    }
}

/// This command line, quoted for a shell, to run again later.
fn command_line() -> String {
    std::env::args_os()
        .map(|a| {
            let s = a.to_string_lossy().into_owned();
            let plain = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b));
            if plain {
                s
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_issues(
    out: &mut dyn Write,
    title: &str,
    list: &[restore::FileIssue],
) -> std::io::Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    writeln!(out, "{title} ({}):", list.len())?;
    for f in list {
        writeln!(out, "  {}: {}", f.path, f.message)?;
    }
    Ok(())
}

fn print_report(r: &RestoreReport) -> anyhow::Result<()> {
    let mut out = super::output::stdout();
    writeln!(
        out,
        "restored {} files ({}) into {}: {} from stages, {} from {} images; {} already there",
        r.restored,
        ByteSize(r.restored_bytes),
        r.to,
        r.from_stage,
        r.from_images,
        r.images.iter().filter(|i| i.done).count(),
        r.already_there
    )?;
    writeln!(out, "downloaded {}", ByteSize(r.bytes_downloaded))?;
    print_common(&mut out, r)?;
    if !r.waiting.is_empty() {
        writeln!(out, "waiting for {} thaw(s):", r.waiting.len())?;
        for w in &r.waiting {
            writeln!(
                out,
                "  site {}: {} ({} tier), requested {}, ready by {}",
                w.site, w.key, w.tier, w.requested, w.ready_by
            )?;
        }
        if let Some(cmd) = &r.run_later {
            writeln!(
                out,
                "run this again after the time shown (or now with --wait) to finish; nothing is asked twice:\n  {cmd}"
            )?;
        }
    }
    Ok(())
}

fn print_common(out: &mut dyn Write, r: &RestoreReport) -> anyhow::Result<()> {
    for p in &r.unmatched {
        writeln!(out, "no file matches {p:?}")?;
    }
    if r.deleted_left_out > 0 {
        writeln!(
            out,
            "{} matching files were deleted locally and left out (--deleted brings them back)",
            r.deleted_left_out
        )?;
    }
    if r.without_version > 0 {
        writeln!(out, "{} files have no such version", r.without_version)?;
    }
    print_issues(
        out,
        "left alone: different files already in place",
        &r.left_alone,
    )?;
    print_issues(out, "refused names", &r.refused)?;
    print_issues(out, "no copy anywhere", &r.missing)?;
    print_issues(out, "failed", &r.failed)?;
    for w in &r.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}

fn print_dry_run(r: &RestoreReport) -> anyhow::Result<()> {
    let mut out = super::output::stdout();
    writeln!(
        out,
        "dry run: nothing was downloaded, written or thawed\n{} files ({}) to restore into {}, {} already there",
        r.files.len(),
        ByteSize(r.files.iter().map(|f| f.size).sum()),
        r.to,
        r.already_there
    )?;
    let mut t = Table::new(&["FILE", "SIZE", "FROM"]).right(&[1]);
    for f in &r.files {
        t.row(vec![
            f.path.clone(),
            ByteSize(f.size).to_string(),
            f.from.clone(),
        ]);
    }
    t.print(&mut out)?;
    if !r.images.is_empty() {
        let mut t = Table::new(&[
            "SITE", "IMAGE", "THAW", "FILES", "WANTED", "DOWNLOAD", "GETS", "WHY",
        ])
        .right(&[3, 4, 5, 6]);
        for i in &r.images {
            t.row(vec![
                i.job.site.clone(),
                i.job.name.clone(),
                i.thaw.clone(),
                i.files.to_string(),
                ByteSize(i.job.wanted_bytes).to_string(),
                ByteSize(i.job.download_bytes).to_string(),
                i.gets.to_string(),
                i.job.why.clone(),
            ]);
        }
        t.print(&mut out)?;
    }
    if let Some(e) = &r.estimate {
        writeln!(
            out,
            "requests: {} GET, {} thaw (RestoreObject, one per image)",
            e.get_requests, e.thaw_requests
        )?;
        if e.thaw_requests > 0 {
            for c in &e.thaw {
                writeln!(
                    out,
                    "thaw {} of images, {} tier: ${:.4}, ready within {} hours{}",
                    ByteSize(e.thaw_bytes),
                    c.tier,
                    c.usd,
                    c.ready_within_hours,
                    if Some(c.tier) == e.tier {
                        " (this restore's tier)"
                    } else {
                        ""
                    }
                )?;
            }
        }
        writeln!(out, "GET requests: ${:.4}", e.get_usd)?;
        write!(
            out,
            "egress: {} out, ${:.2}",
            ByteSize(e.egress_bytes),
            e.egress_usd
        )?;
        if e.egress_unpriced_bytes > 0 {
            write!(
                out,
                " plus {} at a provider whose price lomob does not know (see its price list)",
                ByteSize(e.egress_unpriced_bytes)
            )?;
        }
        writeln!(out)?;
        if e.wait_hours > 0.0 {
            writeln!(
                out,
                "expected wait: up to {} hours for the thaws",
                e.wait_hours
            )?;
        }
    }
    print_common(&mut out, r)
}

pub fn recover(ctx: &Context, a: RecoverArgs) -> anyhow::Result<u8> {
    let names = super::sync_cmd::pick_sites(ctx, a.site.as_deref(), a.all)?;
    let m = ctx.open_manifest_for_import()?;
    let sites = open_sites(ctx, &names)?;
    let roots: Vec<Vec<u8>> = ctx
        .config
        .config
        .library
        .roots
        .iter()
        .map(|r| {
            crate::platform::names::path_bytes(&lomob_backends::secret::expand_home(r)).into_owned()
        })
        .collect();
    let rt = super::sync_cmd::runtime()?;
    let report = rt.block_on(recover::recover(&m, &sites, &roots))?;
    if ctx.json {
        output::json(&report)?;
    } else {
        print_recovery(&report)?;
    }
    Ok(if report.unaccounted.is_empty() {
        exit::SUCCESS
    } else {
        exit::PARTIAL
    })
}

fn print_recovery(r: &recover::RecoverReport) -> anyhow::Result<()> {
    let mut out = super::output::stdout();
    match &r.snapshot {
        Some(s) => writeln!(out, "recovered from the manifest snapshot on {s}")?,
        None => writeln!(
            out,
            "recovered from the archive's image catalogs and the stage listing (no usable snapshot)"
        )?,
    }
    writeln!(
        out,
        "now known: {} files, {} versions, {} contents, {} images, {} staged copies",
        r.files, r.versions, r.contents, r.images, r.staged
    )?;
    writeln!(
        out,
        "roots{}: {}",
        if r.inferred_roots {
            " (some inferred from the paths: set [library] roots to choose)"
        } else {
            ""
        },
        r.roots.join(", ")
    )?;
    for s in &r.skipped_snapshots {
        writeln!(out, "snapshot not used: {s}")?;
    }
    for u in &r.unaccounted {
        writeln!(out, "not accounted for: {u}")?;
    }
    for w in &r.warnings {
        writeln!(out, "warning: {w}")?;
    }
    writeln!(
        out,
        "next: `lomob restore --to DIR` brings the files back (`--dry-run` first shows the cost)"
    )?;
    Ok(())
}

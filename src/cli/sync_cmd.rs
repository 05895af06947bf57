//! `lomob sync` and `lomob backup`: the daily job, per site or fanned out to every site.

use std::io::Write;
use std::sync::Arc;

use anyhow::bail;
use futures::StreamExt;
use lomob_backends::ByteSize;

use super::args::{BackupArgs, SyncArgs};
use super::output::{self, Table};
use super::Context;
use crate::alert::Ping;
use crate::cost;
use crate::exit::{self, UsageError};
use crate::manifest::Manifest;
use crate::site::Site;
use crate::sync::{self, SiteError, SiteReport, SyncOptions};
use lomob_backends::ErrorKind;

/// Sites synced at once by `--all`.
const SITES_AT_ONCE: usize = 3;

pub fn run(ctx: &Context, a: SyncArgs) -> anyhow::Result<u8> {
    let names = pick_sites(ctx, a.site.as_deref(), a.all)?;
    let m = if a.dry_run {
        ctx.open_manifest()?
    } else {
        super::alerts::open_for_run(ctx, &names, "sync")?
    };
    let opts = SyncOptions {
        pack_now: a.pack_now,
        dry_run: a.dry_run,
        progress: ctx.progress,
    };
    if !opts.dry_run {
        super::alerts::ping(ctx, &names, Ping::Start, "lomob sync started");
    }
    let reports = run_sites(ctx, m.clone(), &names, &opts)?;
    let code = print(ctx, &reports)?;
    if !opts.dry_run {
        after(ctx, &m, &names, &reports, code);
    }
    Ok(code)
}

/// Alerts and the closing heartbeat of a sync; neither can fail the run.
fn after(ctx: &Context, m: &Manifest, names: &[String], reports: &[SiteReport], code: u8) {
    if let Err(e) = super::alerts::after_sync(ctx, m, reports) {
        tracing::error!("alerts: {e:#}");
    }
    let summary = serde_json::to_string_pretty(reports).unwrap_or_default();
    let what = if code == exit::SUCCESS {
        Ping::Success
    } else {
        Ping::Fail
    };
    super::alerts::ping(ctx, names, what, &summary);
}

pub fn backup(ctx: &Context, a: BackupArgs) -> anyhow::Result<u8> {
    let names = pick_sites(ctx, None, true)?;
    let m = super::alerts::open_for_run(ctx, &names, "backup")?;
    super::alerts::ping(ctx, &names, Ping::Start, "lomob backup started");
    let roots = super::scan_cmd::resolve_roots(ctx, &m, &a.scan.dirs)?;
    let opts = super::scan_cmd::options(ctx, &a.scan);
    let started = crate::manifest::now();
    let scan = crate::scan::scan(&m, &roots, &opts)?;
    super::scan_cmd::record_run(&m, started, &scan)?;
    if !ctx.json {
        super::scan_cmd::print_summary(&scan)?;
    }
    let reports = run_sites(
        ctx,
        m.clone(),
        &names,
        &SyncOptions {
            pack_now: a.pack_now,
            dry_run: false,
            progress: ctx.progress,
        },
    )?;
    let code = print(ctx, &reports)?;
    let code = if code == exit::SUCCESS && scan.errors > 0 {
        exit::PARTIAL
    } else {
        code
    };
    after(ctx, &m, &names, &reports, code);
    Ok(code)
}

pub(super) fn pick_sites(
    ctx: &Context,
    site: Option<&str>,
    all: bool,
) -> anyhow::Result<Vec<String>> {
    let sites = &ctx.config.config.sites;
    match (site, all) {
        (Some(s), false) => {
            ctx.site_config(s)?;
            Ok(vec![s.to_string()])
        }
        (None, true) => {
            if sites.is_empty() {
                bail!(UsageError(
                    "no sites configured: add a [sites.NAME] section (see profiles/)".into()
                ));
            }
            Ok(sites.keys().cloned().collect())
        }
        _ => bail!(UsageError(
            "say which sites: --site NAME, or --all for every site".into()
        )),
    }
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run_sites(
    ctx: &Context,
    m: Arc<Manifest>,
    names: &[String],
    opts: &SyncOptions,
) -> anyhow::Result<Vec<SiteReport>> {
    let rt = runtime()?;
    let sites = &ctx.config.config.sites;
    let reports = rt.block_on(async {
        futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let m = m.clone();
                let opts = opts.clone();
                let cfg = sites[&name].clone();
                async move {
                    match Site::open(&name, &cfg) {
                        Ok(site) => {
                            tracing::info!("site {name}: syncing");
                            tokio::spawn(sync::sync_site(m, Arc::new(site), opts))
                                .await
                                .unwrap_or_else(|e| SiteReport {
                                    site: name.clone(),
                                    errors: vec![SiteError {
                                        kind: ErrorKind::Other,
                                        message: format!("the sync task failed: {e}"),
                                    }],
                                    ..Default::default()
                                })
                        }
                        Err(e) => SiteReport {
                            site: name.clone(),
                            dry_run: opts.dry_run,
                            errors: vec![SiteError {
                                kind: e.kind(),
                                message: e.to_string(),
                            }],
                            ..Default::default()
                        },
                    }
                }
            })
            .buffer_unordered(SITES_AT_ONCE)
            .collect::<Vec<_>>()
            .await
    });
    let mut reports = reports;
    reports.sort_by(|a, b| a.site.cmp(&b.site));
    Ok(reports)
}

fn dry_run_cost(ctx: &Context, r: &SiteReport) -> (u64, f64) {
    let Some(cfg) = ctx.config.config.sites.get(&r.site) else {
        return (0, 0.0);
    };
    // Stage: a PUT per file; a HEAD to verify it only where the PUT's answer carries no MD5.
    let stage_puts = r.staged_files;
    let stage_heads = match &cfg.stage {
        lomob_backends::BackendConfig::S3(_) => 0,
        _ => r.staged_files,
    };
    // Archive, per image: one PUT up to single-put-max, else create + parts + complete; one
    // PUT for its catalog; HEADs before and after.
    let (part, single_max) = match cfg.archive.s3() {
        Some(c) => (c.part_size().bytes(), c.single_put_max().bytes()),
        None => (64 << 20, u64::MAX),
    };
    let per_image = if r.images.is_empty() {
        0
    } else {
        r.archived_bytes / r.images.len() as u64
    };
    let image_requests = if per_image <= single_max {
        1
    } else {
        cost::upload_requests(per_image, part)
    };
    let archive_puts: u64 = r.images.len() as u64 * (image_requests + 1);
    let archive_heads = r.images.len() as u64 * 3;
    let stage_cost = cost::request_cost(&cost::prices(&cfg.stage), stage_puts, stage_heads);
    let archive_cost = cost::request_cost(&cost::prices(&cfg.archive), archive_puts, archive_heads);
    (
        stage_puts + stage_heads + archive_puts + archive_heads,
        stage_cost + archive_cost,
    )
}

fn print(ctx: &Context, reports: &[SiteReport]) -> anyhow::Result<u8> {
    let failed = reports.iter().any(|r| !r.ok);
    if ctx.json {
        output::json(&reports)?;
    } else if reports.iter().any(|r| r.dry_run) {
        let mut t = Table::new(&[
            "SITE",
            "TO STAGE",
            "BYTES",
            "IMAGES",
            "TO ARCHIVE",
            "REQUESTS",
            "REQUEST COST",
        ])
        .right(&[1, 2, 3, 4, 5, 6]);
        for r in reports {
            let (req, usd) = dry_run_cost(ctx, r);
            t.row(vec![
                r.site.clone(),
                r.staged_files.to_string(),
                ByteSize(r.staged_bytes).to_string(),
                r.images.len().to_string(),
                ByteSize(r.archived_bytes).to_string(),
                req.to_string(),
                format!("${usd:.4}"),
            ]);
        }
        let mut out = super::output::stdout();
        writeln!(out, "dry run: nothing was uploaded")?;
        t.print(&mut out)?;
        for r in reports {
            for e in &r.errors {
                writeln!(out, "  {}: {e}", r.site)?;
            }
        }
    } else {
        let mut t = Table::new(&[
            "SITE", "STAGED", "IMAGES", "ARCHIVED", "FREED", "WAITING", "REQUESTS", "RESULT",
        ])
        .right(&[1, 2, 3, 4, 5, 6]);
        for r in reports {
            t.row(vec![
                r.site.clone(),
                format!("{} ({})", r.staged_files, ByteSize(r.staged_bytes)),
                r.images.len().to_string(),
                format!("{} ({})", r.archived_files, ByteSize(r.archived_bytes)),
                r.freed_files.to_string(),
                ByteSize(r.pending_bytes).to_string(),
                r.requests.total().to_string(),
                if r.ok { "ok".into() } else { "FAILED".into() },
            ]);
        }
        t.print(&mut super::output::stdout())?;
        let mut err = super::output::stderr();
        for r in reports {
            if r.skipped_changed > 0 {
                writeln!(
                    err,
                    "{}: {} file(s) changed since the scan were skipped; run `lomob scan` (or `lomob backup`)",
                    r.site, r.skipped_changed
                )?;
            }
            for name in &r.adopted_images {
                writeln!(
                    err,
                    "{}: {name} had been stored and verified by an interrupted run; recorded now",
                    r.site
                )?;
            }
            if r.waiting_to_free > 0 {
                writeln!(
                    err,
                    "{}: {} staged copie(s) of archived files could not be deleted this time; the next run tries again",
                    r.site, r.waiting_to_free
                )?;
            }
            for key in &r.unverified_objects {
                writeln!(
                    err,
                    "{}: {key} is not counted as archived (it could not be verified); it is billed until deleted: see `lomob status`",
                    r.site
                )?;
            }
            for f in &r.silent_changes {
                writeln!(
                    err,
                    "{}: {} changed without a new modification time (possible silent corruption); backed up as a new version, the older one is kept",
                    r.site, f.path
                )?;
            }
            for f in &r.lost_versions {
                writeln!(
                    err,
                    "{}: {} changed before any copy of its earlier bytes was made: that version can never be backed up",
                    r.site, f.path
                )?;
            }
            if r.expired_files > 0 {
                writeln!(
                    err,
                    "{}: {} staged copie(s) of files gone locally ({}) removed under stage-retention-days; they are not archived",
                    r.site,
                    r.expired_files,
                    ByteSize(r.expired_bytes)
                )?;
            }
            for e in &r.errors {
                writeln!(err, "{}: {e}", r.site)?;
            }
        }
    }
    // The most serious failure decides: an integrity problem, then a configuration one,
    // then any other; a server that could not be reached (the next run continues) last.
    let worst = reports
        .iter()
        .filter(|r| !r.ok)
        .filter_map(SiteReport::worst)
        .map(exit::for_kind)
        .min_by_key(|c| match *c {
            exit::INTEGRITY => 0,
            exit::USAGE => 1,
            exit::TRANSIENT => 3,
            _ => 2,
        });
    Ok(match (failed, worst) {
        (false, _) => exit::SUCCESS,
        (true, Some(c)) => c,
        (true, None) => exit::FAILURE,
    })
}

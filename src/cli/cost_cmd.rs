//! `lomob cost`: what each site costs per month, from the manifest and the price table,
//! beside what storing every file as its own cold object would cost.

use std::collections::HashSet;
use std::io::Write;

use lomob_backends::ByteSize;
use serde::Serialize;

use super::output::{self, Table};
use super::Context;
use crate::cost::{prices, request_cost};
use crate::exit;

#[derive(Serialize)]
struct SiteCost {
    site: String,
    stage_bytes: u64,
    archive_bytes: u64,
    archive_objects: u64,
    /// Archive objects lomob does not count (unverified, or found under a name it wanted),
    /// billed like any other until deleted.
    unverified_bytes: u64,
    unverified_objects: u64,
    /// Dollars per month for what is stored now.
    storage_per_month: f64,
    /// Dollars for the requests of the last 30 days of runs.
    requests_last_30_days: f64,
    /// The same archived files as one cold object each: one-time PUTs, and per month
    /// (each cold object carries about 40 KB of billed overhead).
    per_file_objects: u64,
    per_file_put_cost: f64,
    per_file_storage_per_month: f64,
}

const GB: f64 = 1e9;
/// Billed overhead of one archived object: 32 KB at the archive rate, 8 KB at Standard.
const COLD_OVERHEAD_ARCHIVE: f64 = 32_000.0;
const COLD_OVERHEAD_STANDARD: f64 = 8_000.0;
const STANDARD_GB_MONTH: f64 = 0.023;

pub fn run(ctx: &Context, site: Option<String>) -> anyhow::Result<u8> {
    let sites = &ctx.config.config.sites;
    if let Some(s) = &site {
        ctx.site_config(s)?;
    }
    let m = ctx.open_manifest()?;
    let isos = m.isos()?;
    let month_ago = crate::manifest::now() - 30 * 86_400;
    let mut rows = Vec::new();
    for (name, cfg) in sites {
        if site.as_ref().is_some_and(|s| s != name) {
            continue;
        }
        let sp = prices(&cfg.stage);
        let ap = prices(&cfg.archive);
        let stage_bytes: u64 = m.staged(Some(name))?.iter().map(|(_, _, r)| r.size).sum();
        let mine: Vec<_> = isos
            .iter()
            .filter(|i| i.uploads.iter().any(|u| &u.site == name))
            .collect();
        let archive_bytes: u64 = mine.iter().map(|i| i.size).sum();
        let objects = mine.len() as u64;
        let unverified = m.unverified(Some(name))?;
        let unverified_bytes: u64 = unverified.iter().map(|(_, o)| o.size).sum();
        let unverified_objects = unverified.len() as u64;
        let cold = cfg.archive.capabilities().min_storage_days > 0;
        let overhead = |n: u64| {
            if cold {
                n as f64
                    * (COLD_OVERHEAD_ARCHIVE * ap.storage_gb_month
                        + COLD_OVERHEAD_STANDARD * STANDARD_GB_MONTH)
                    / GB
            } else {
                0.0
            }
        };
        let storage = stage_bytes as f64 / GB * sp.storage_gb_month
            + (archive_bytes + unverified_bytes) as f64 / GB * ap.storage_gb_month
            + overhead(objects + unverified_objects);
        let command = format!("sync:{name}");
        let mut puts = 0;
        let mut gets = 0;
        for kv in m.runs() {
            let (_, r) = kv?;
            if r.command != command || r.started < month_ago {
                continue;
            }
            for (k, v) in &r.counts {
                match k.as_str() {
                    "requests_put" | "requests_post" | "requests_list" | "requests_delete" => {
                        puts += v
                    }
                    "requests_get" | "requests_head" => gets += v,
                    _ => {}
                }
            }
        }
        // Requests are split between stage and archive in the run record; price them at the
        // dearer of the two, so the figure is an upper bound.
        let dear = if ap.put_per_1000 > sp.put_per_1000 {
            ap
        } else {
            sp
        };
        let archived: HashSet<_> = m
            .archived(Some(name))?
            .into_iter()
            .map(|(_, c, _)| c)
            .collect();
        let files = archived.len() as u64;
        let archived_data: u64 = archived
            .iter()
            .filter_map(|c| m.content(c).ok().flatten())
            .map(|c| c.size)
            .sum();
        rows.push(SiteCost {
            site: name.clone(),
            stage_bytes,
            archive_bytes,
            archive_objects: objects,
            unverified_bytes,
            unverified_objects,
            storage_per_month: storage,
            requests_last_30_days: request_cost(&dear, puts, gets),
            per_file_objects: files,
            per_file_put_cost: request_cost(&ap, files, 0),
            per_file_storage_per_month: archived_data as f64 / GB * ap.storage_gb_month
                + overhead(files),
        });
    }
    if ctx.json {
        output::json(&rows)?;
        return Ok(exit::SUCCESS);
    }
    let mut t = Table::new(&[
        "SITE",
        "STAGED",
        "ARCHIVED",
        "IMAGES",
        "$/MONTH",
        "REQUESTS $ (30 DAYS)",
        "ONE OBJECT PER FILE: PUT $",
        "$/MONTH",
    ])
    .right(&[1, 2, 3, 4, 5, 6, 7]);
    for r in &rows {
        t.row(vec![
            r.site.clone(),
            ByteSize(r.stage_bytes).to_string(),
            ByteSize(r.archive_bytes).to_string(),
            r.archive_objects.to_string(),
            format!("{:.4}", r.storage_per_month),
            format!("{:.4}", r.requests_last_30_days),
            format!("{:.4} ({} PUTs)", r.per_file_put_cost, r.per_file_objects),
            format!("{:.4}", r.per_file_storage_per_month),
        ]);
    }
    let mut out = super::output::stdout();
    t.print(&mut out)?;
    for r in rows.iter().filter(|r| r.unverified_objects > 0) {
        writeln!(
            out,
            "{}: $/MONTH includes {} archive object(s) ({}) lomob does not count (unverified); they are billed until deleted, and deleting them before the minimum storage duration is billed too",
            r.site,
            r.unverified_objects,
            ByteSize(r.unverified_bytes)
        )?;
    }
    writeln!(
        out,
        "prices: 2024 list prices per backend kind and storage class (Deep Archive $0.00099/GB-month, $0.05 per 1,000 PUTs); free stages cost $0"
    )?;
    Ok(exit::SUCCESS)
}

//! `lomob scan`: resolve the roots and options, run the scan, print the summary.

use std::io::Write;
use std::path::PathBuf;

use lomob_backends::ByteSize;

use super::args::ScanArgs;
use super::Context;
use crate::exit::{self, UsageError};
use crate::manifest::{self, Manifest, RunRecord};
use crate::scan::{self, ScanOptions, ScanReport};

/// The roots to scan: the arguments, else the configured roots, else those scanned before.
pub fn resolve_roots(
    ctx: &Context,
    m: &Manifest,
    dirs: &[PathBuf],
) -> anyhow::Result<Vec<PathBuf>> {
    if !dirs.is_empty() {
        return Ok(dirs.to_vec());
    }
    let lib = &ctx.config.config.library;
    if !lib.roots.is_empty() {
        return Ok(lib
            .roots
            .iter()
            .map(|r| lomob_backends::secret::expand_home(r))
            .collect());
    }
    let known: Vec<PathBuf> = m
        .roots()?
        .into_iter()
        .map(|r| crate::platform::names::path_of(&r.path))
        .collect();
    if known.is_empty() {
        return Err(UsageError(
            "nothing to scan: give a folder (lomob scan ~/Pictures) or set `roots` in the [library] section of the config".into(),
        )
        .into());
    }
    Ok(known)
}

pub fn options(ctx: &Context, a: &ScanArgs) -> ScanOptions {
    let lib = &ctx.config.config.library;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    ScanOptions {
        ignore_files: a
            .ignore_files
            .clone()
            .unwrap_or_else(|| lib.ignore_files.clone()),
        ignore_dirs: a
            .ignore_dirs
            .clone()
            .unwrap_or_else(|| lib.ignore_dirs.clone()),
        threads: a
            .threads
            .map(usize::from)
            .or(lib.threads)
            .unwrap_or(cores)
            .max(1),
        progress: ctx.progress,
        max_delete: lib.max_delete,
        allow_delete: a.allow_delete,
    }
}

pub fn run(ctx: &Context, a: ScanArgs) -> anyhow::Result<u8> {
    let m = ctx.open_manifest()?;
    let roots = resolve_roots(ctx, &m, &a.dirs)?;
    let opts = options(ctx, &a);
    let started = manifest::now();
    let report = scan::scan(&m, &roots, &opts)?;
    record_run(&m, started, &report)?;
    if ctx.json {
        super::output::json(&report)?;
    } else {
        print_summary(&report)?;
    }
    Ok(if report.errors > 0 {
        exit::PARTIAL
    } else {
        exit::SUCCESS
    })
}

pub(super) fn record_run(m: &Manifest, started: i64, r: &ScanReport) -> anyhow::Result<()> {
    let counts = [
        ("new", r.new),
        ("changed", r.changed),
        ("touched", r.touched),
        ("unchanged", r.unchanged),
        ("deleted", r.deleted),
        ("deletions_held", r.deletions_held),
        ("renamed", r.renamed),
        ("duplicates", r.duplicates),
        ("files_hashed", r.files_hashed),
        ("bytes_hashed", r.bytes_hashed),
        ("errors", r.errors),
    ];
    m.add_run(&RunRecord {
        command: "scan".into(),
        started,
        ended: manifest::now(),
        counts: counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        errors: r
            .problems
            .iter()
            .take(100)
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect(),
        ok: r.errors == 0,
    })?;
    m.flush()?;
    Ok(())
}

pub(super) fn print_summary(r: &ScanReport) -> std::io::Result<()> {
    let mut out = super::output::stdout();
    writeln!(
        out,
        "scanned {}: {} new, {} changed, {} unchanged, {} deleted, {} errors",
        r.roots.join(", "),
        r.new,
        r.changed,
        r.unchanged,
        r.deleted,
        r.errors
    )?;
    let mut extra = Vec::new();
    if r.renamed > 0 {
        extra.push(format!("{} renamed", r.renamed));
    }
    if r.duplicates > 0 {
        extra.push(format!("{} duplicate contents (stored once)", r.duplicates));
    }
    if r.touched > 0 {
        extra.push(format!("{} touched (same content)", r.touched));
    }
    if !extra.is_empty() {
        writeln!(out, "  {}", extra.join(", "))?;
    }
    let rate = r.bytes_hashed as f64 / r.elapsed_secs.max(0.001);
    writeln!(
        out,
        "  hashed {} files, {} in {:.1}s ({}/s)",
        r.files_hashed,
        ByteSize(r.bytes_hashed),
        r.elapsed_secs,
        ByteSize(rate as u64)
    )?;
    drop(out);
    if !r.problems.is_empty() {
        let mut err = super::output::stderr();
        writeln!(err, "could not read {} item(s):", r.errors)?;
        for p in &r.problems {
            writeln!(err, "  {}: {}", p.path, p.message)?;
        }
        if (r.problems.len() as u64) < r.errors {
            writeln!(err, "  ... and {} more", r.errors - r.problems.len() as u64)?;
        }
        writeln!(
            err,
            "nothing under these was marked deleted; fix what is said above (mount the disk, fix the permissions) and scan again"
        )?;
    }
    Ok(())
}

//! `lomob status`: totals of files and bytes by state, and the last scan.

use std::io::Write;

use lomob_backends::ByteSize;
use serde::Serialize;

use super::output::{self, Table};
use super::Context;
use crate::exit;

#[derive(Serialize, Default)]
struct Totals {
    files: u64,
    bytes: u64,
}

#[derive(Serialize, Default)]
struct Status {
    manifest: String,
    roots: Vec<String>,
    present: Totals,
    deleted: Totals,
    /// Every version of every path (what must stay restorable).
    versions: Totals,
    /// Distinct contents (what is actually stored, once each).
    contents: Totals,
    last_scan: Option<LastRun>,
}

#[derive(Serialize)]
struct LastRun {
    started: String,
    ended: String,
    ok: bool,
    counts: Vec<(String, u64)>,
}

pub fn run(ctx: &Context) -> anyhow::Result<u8> {
    let m = ctx.open_manifest()?;
    let mut s = Status {
        manifest: m.path().display().to_string(),
        roots: m.roots()?.iter().map(|r| output::show(&r.path)).collect(),
        ..Default::default()
    };
    for kv in m.files() {
        let (_, _, f) = kv?;
        let t = if f.is_deleted() {
            &mut s.deleted
        } else {
            &mut s.present
        };
        t.files += 1;
        t.bytes += f.size;
        s.versions.files += f.versions.len() as u64;
        s.versions.bytes += f.versions.iter().map(|v| v.size).sum::<u64>();
    }
    for kv in m.contents() {
        let (_, c) = kv?;
        s.contents.files += 1;
        s.contents.bytes += c.size;
    }
    for kv in m.runs() {
        let (_, r) = kv?;
        if r.command == "scan" {
            s.last_scan = Some(LastRun {
                started: output::rfc3339(r.started),
                ended: output::rfc3339(r.ended),
                ok: r.ok,
                counts: r.counts,
            });
            break;
        }
    }
    if ctx.json {
        output::json(&s)?;
        return Ok(exit::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "manifest: {}", s.manifest)?;
    if s.roots.is_empty() {
        writeln!(out, "roots: none yet (run `lomob scan DIR`)")?;
    } else {
        writeln!(out, "roots: {}", s.roots.join(", "))?;
    }
    let mut t = Table::new(&["STATE", "FILES", "SIZE"]).right(&[1, 2]);
    for (name, tot) in [
        ("present", &s.present),
        ("deleted locally", &s.deleted),
        ("all versions", &s.versions),
        ("distinct contents", &s.contents),
    ] {
        t.row(vec![
            name.into(),
            tot.files.to_string(),
            ByteSize(tot.bytes).to_string(),
        ]);
    }
    t.print(&mut out)?;
    match &s.last_scan {
        Some(r) => {
            let get = |k: &str| r.counts.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
            writeln!(
                out,
                "last scan: {} ({}): {} new, {} changed, {} deleted, {} errors",
                r.ended.replace('T', " "),
                if r.ok { "ok" } else { "partial" },
                get("new"),
                get("changed"),
                get("deleted"),
                get("errors")
            )?;
        }
        None => writeln!(out, "last scan: never")?,
    }
    Ok(exit::SUCCESS)
}

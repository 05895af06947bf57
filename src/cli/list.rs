//! `lomob list dirs|bigfiles|files`: what the manifest holds, as tables or JSON.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use lomob_backends::ByteSize;
use serde::Serialize;

use super::args::ListCommand;
use super::output::{self, show, Table};
use super::Context;
use crate::exit;
use crate::manifest::{FileRecord, Manifest};

#[derive(Serialize)]
struct FileRow {
    path: String,
    root: String,
    size: u64,
    mtime: String,
    versions: usize,
    sha256: String,
    xxh3: String,
    deleted_at: Option<String>,
}

fn full_path(root: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut p = root.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(rel);
    p
}

pub fn run(ctx: &Context, cmd: ListCommand) -> anyhow::Result<u8> {
    let m = ctx.open_manifest()?;
    let roots: HashMap<u32, Vec<u8>> = m.roots()?.into_iter().map(|r| (r.id, r.path)).collect();
    match cmd {
        ListCommand::Dirs => dirs(ctx, &m, &roots),
        ListCommand::Bigfiles { file_size } => {
            let mut rows = files(&m, &roots, |_, _, f| {
                !f.is_deleted() && f.size >= file_size.bytes()
            })?;
            rows.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
            print_files(ctx, rows)
        }
        ListCommand::Files { dir, deleted } => {
            let filter = dir.as_deref().map(|d| dir_filter(d, &roots));
            let rows = files(&m, &roots, |root, rel, f| {
                (deleted || !f.is_deleted())
                    && filter.as_ref().is_none_or(|flt| flt.matches(root, rel))
            })?;
            print_files(ctx, rows)
        }
    }
}

/// `--dir`: an absolute folder under a root, or a folder relative to any root.
struct DirFilter {
    root: Option<u32>,
    prefix: Vec<u8>,
}

impl DirFilter {
    fn matches(&self, root: u32, rel: &[u8]) -> bool {
        if self.root.is_some_and(|r| r != root) {
            return false;
        }
        self.prefix.is_empty()
            || (rel.starts_with(&self.prefix) && rel.get(self.prefix.len()) == Some(&b'/'))
    }
}

fn dir_filter(d: &Path, roots: &HashMap<u32, Vec<u8>>) -> DirFilter {
    let d = std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
    let bytes = d.as_os_str().as_bytes();
    if d.is_absolute() {
        for (id, r) in roots {
            if bytes == r.as_slice() {
                return DirFilter {
                    root: Some(*id),
                    prefix: Vec::new(),
                };
            }
            if bytes.starts_with(r) && bytes.get(r.len()) == Some(&b'/') {
                return DirFilter {
                    root: Some(*id),
                    prefix: bytes[r.len() + 1..].to_vec(),
                };
            }
        }
    }
    let trimmed: &[u8] = {
        let mut b = bytes;
        while b.ends_with(b"/") {
            b = &b[..b.len() - 1];
        }
        b
    };
    DirFilter {
        root: None,
        prefix: trimmed.to_vec(),
    }
}

fn files(
    m: &Manifest,
    roots: &HashMap<u32, Vec<u8>>,
    keep: impl Fn(u32, &[u8], &FileRecord) -> bool,
) -> anyhow::Result<Vec<FileRow>> {
    let mut rows = Vec::new();
    for kv in m.files() {
        let (root, rel, f) = kv?;
        if !keep(root, &rel, &f) {
            continue;
        }
        let root_path = roots.get(&root).cloned().unwrap_or_default();
        let content = m.content(&f.current().content)?;
        rows.push(FileRow {
            path: show(&full_path(&root_path, &rel)),
            root: show(&root_path),
            size: f.size,
            mtime: output::rfc3339(f.mtime_ns.div_euclid(1_000_000_000)),
            versions: f.versions.len(),
            sha256: content.map(|c| hex::encode(c.sha256)).unwrap_or_default(),
            xxh3: hex::encode(f.current().content),
            deleted_at: f.deleted_at.map(output::rfc3339),
        });
    }
    Ok(rows)
}

fn print_files(ctx: &Context, rows: Vec<FileRow>) -> anyhow::Result<u8> {
    if ctx.json {
        output::json(&rows)?;
        return Ok(exit::SUCCESS);
    }
    let mut t = Table::new(&["SIZE", "MODIFIED", "VERSIONS", "STATE", "PATH"]).right(&[0, 2]);
    for r in &rows {
        t.row(vec![
            ByteSize(r.size).to_string(),
            r.mtime.get(..16).unwrap_or(&r.mtime).replace('T', " "),
            r.versions.to_string(),
            if r.deleted_at.is_some() {
                "deleted".into()
            } else {
                "present".into()
            },
            r.path.clone(),
        ]);
    }
    let mut out = super::output::stdout();
    t.print(&mut out)?;
    writeln!(
        out,
        "{} files, {}",
        rows.len(),
        ByteSize(rows.iter().map(|r| r.size).sum())
    )?;
    Ok(exit::SUCCESS)
}

#[derive(Serialize, Default)]
struct DirRow {
    path: String,
    files: u64,
    bytes: u64,
}

fn dirs(ctx: &Context, m: &Manifest, roots: &HashMap<u32, Vec<u8>>) -> anyhow::Result<u8> {
    let mut agg: BTreeMap<Vec<u8>, DirRow> = BTreeMap::new();
    for kv in m.files() {
        let (root, rel, f) = kv?;
        if f.is_deleted() {
            continue;
        }
        let dir = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => &rel[..i],
            None => &[][..],
        };
        let root_path = roots.get(&root).cloned().unwrap_or_default();
        let full = if dir.is_empty() {
            root_path
        } else {
            full_path(&root_path, dir)
        };
        let row = agg.entry(full).or_default();
        row.files += 1;
        row.bytes += f.size;
    }
    let rows: Vec<DirRow> = agg
        .into_iter()
        .map(|(k, mut v)| {
            v.path = Path::new(OsStr::from_bytes(&k)).display().to_string();
            v
        })
        .collect();
    if ctx.json {
        output::json(&rows)?;
        return Ok(exit::SUCCESS);
    }
    let mut t = Table::new(&["FILES", "SIZE", "FOLDER"]).right(&[0, 1]);
    for r in &rows {
        t.row(vec![
            r.files.to_string(),
            ByteSize(r.bytes).to_string(),
            r.path.clone(),
        ]);
    }
    let mut out = super::output::stdout();
    t.print(&mut out)?;
    writeln!(out, "{} folders", rows.len())?;
    Ok(exit::SUCCESS)
}

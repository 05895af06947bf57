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
    /// The sites holding the current version, and how.
    sites: Vec<SiteCopy>,
}

#[derive(Serialize, Clone, PartialEq, Eq)]
struct SiteCopy {
    site: String,
    /// `staged` or `archived` (in a verified image).
    copy: &'static str,
}

/// Which sites hold each content.
type Copies = HashMap<crate::manifest::ContentId, Vec<SiteCopy>>;

fn copies(m: &Manifest) -> anyhow::Result<Copies> {
    let mut c: Copies = HashMap::new();
    for (site, content, _) in m.archived(None)? {
        c.entry(content).or_default().push(SiteCopy {
            site,
            copy: "archived",
        });
    }
    for (site, content, _) in m.staged(None)? {
        let v = c.entry(content).or_default();
        if !v.iter().any(|x| x.site == site) {
            v.push(SiteCopy {
                site,
                copy: "staged",
            });
        }
    }
    for v in c.values_mut() {
        v.sort_by(|a, b| a.site.cmp(&b.site));
    }
    Ok(c)
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
        ListCommand::Dirs { table_view } => dirs(ctx, &m, &roots, table_view),
        ListCommand::Bigfiles { file_size } => {
            let mut rows = files(&m, &roots, &Copies::new(), |_, _, f, _| {
                !f.is_deleted() && f.size >= file_size.bytes()
            })?;
            rows.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
            print_files(ctx, rows)
        }
        ListCommand::Files {
            dir,
            deleted,
            state,
            site,
        } => {
            if let Some(s) = &site {
                ctx.site_config(s)?;
            }
            let filter = dir.as_deref().map(|d| dir_filter(d, &roots));
            let copies = copies(&m)?;
            let on_site = |c: &[SiteCopy], how: Option<&str>| {
                c.iter().any(|x| {
                    site.as_ref().is_none_or(|s| &x.site == s) && how.is_none_or(|h| x.copy == h)
                })
            };
            let rows = files(&m, &roots, &copies, |root, rel, f, c| {
                let in_dir = filter.as_ref().is_none_or(|flt| flt.matches(root, rel));
                let wanted = match state.as_deref() {
                    None => deleted || !f.is_deleted(),
                    Some("present") => !f.is_deleted(),
                    Some("deleted") => f.is_deleted(),
                    Some("staged") => on_site(c, Some("staged")),
                    Some("archived") => on_site(c, Some("archived")),
                    // Not yet anywhere off this machine (or on the site named).
                    _ => !f.is_deleted() && !on_site(c, None),
                };
                in_dir && wanted
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
    copies: &Copies,
    keep: impl Fn(u32, &[u8], &FileRecord, &[SiteCopy]) -> bool,
) -> anyhow::Result<Vec<FileRow>> {
    let mut rows = Vec::new();
    for kv in m.files() {
        let (root, rel, f) = kv?;
        let held = copies
            .get(&f.current().content)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !keep(root, &rel, &f, held) {
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
            sites: held.to_vec(),
        });
    }
    Ok(rows)
}

fn print_files(ctx: &Context, rows: Vec<FileRow>) -> anyhow::Result<u8> {
    if ctx.json {
        output::json(&rows)?;
        return Ok(exit::SUCCESS);
    }
    let mut t =
        Table::new(&["SIZE", "MODIFIED", "VERSIONS", "STATE", "SITES", "PATH"]).right(&[0, 2]);
    for r in &rows {
        let sites = if r.sites.is_empty() {
            "-".to_string()
        } else {
            r.sites
                .iter()
                .map(|c| format!("{} ({})", c.site, c.copy))
                .collect::<Vec<_>>()
                .join(", ")
        };
        t.row(vec![
            ByteSize(r.size).to_string(),
            r.mtime.get(..16).unwrap_or(&r.mtime).replace('T', " "),
            r.versions.to_string(),
            if r.deleted_at.is_some() {
                "deleted".into()
            } else {
                "present".into()
            },
            sites,
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

#[derive(Serialize, Default, Clone)]
struct DirRow {
    path: String,
    /// Files directly in the folder (not in its subfolders).
    files: u64,
    bytes: u64,
    /// The newest modification in the folder: its own date or that of a file in it
    /// (local time, `YYYY-MM-DD HH:MM:SS`).
    modified: String,
    #[serde(skip)]
    mtime_ns: i64,
}

/// Every folder of every root: those the last scan saw (with no files of their own too)
/// and those holding present files, with their direct files' count, size and newest date.
fn dir_rows(
    m: &Manifest,
    roots: &HashMap<u32, Vec<u8>>,
) -> anyhow::Result<BTreeMap<u32, BTreeMap<Vec<u8>, DirRow>>> {
    let mut per_root: BTreeMap<u32, BTreeMap<Vec<u8>, DirRow>> = BTreeMap::new();
    for &root in roots.keys() {
        let folders = per_root.entry(root).or_default();
        for (rel, t) in m.dirs_of_root(root)? {
            folders.entry(rel).or_default().mtime_ns = t;
        }
    }
    for kv in m.files() {
        let (root, rel, f) = kv?;
        if f.is_deleted() {
            continue;
        }
        let folders = per_root.entry(root).or_default();
        let dir = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => rel[..i].to_vec(),
            None => Vec::new(),
        };
        // Every folder above it exists too, even when the scan that saw it is older.
        let mut up = dir.clone();
        while let Some(i) = up.iter().rposition(|&b| b == b'/') {
            up.truncate(i);
            folders.entry(up.clone()).or_default();
        }
        folders.entry(Vec::new()).or_default();
        let row = folders.entry(dir).or_default();
        row.files += 1;
        row.bytes += f.size;
        row.mtime_ns = row.mtime_ns.max(f.mtime_ns);
    }
    for (root, folders) in per_root.iter_mut() {
        let root_path = roots.get(root).cloned().unwrap_or_default();
        for (rel, row) in folders.iter_mut() {
            let full = if rel.is_empty() {
                root_path.clone()
            } else {
                full_path(&root_path, rel)
            };
            row.path = Path::new(OsStr::from_bytes(&full)).display().to_string();
            row.modified = local_time(row.mtime_ns);
        }
    }
    Ok(per_root)
}

/// `YYYY-MM-DD HH:MM:SS` in the local time zone.
fn local_time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

fn dirs(
    ctx: &Context,
    m: &Manifest,
    roots: &HashMap<u32, Vec<u8>>,
    table_view: bool,
) -> anyhow::Result<u8> {
    let per_root = dir_rows(m, roots)?;
    let rows: Vec<DirRow> = per_root
        .values()
        .flat_map(|f| f.values().cloned())
        .collect();
    if ctx.json {
        output::json(&rows)?;
        return Ok(exit::SUCCESS);
    }
    let mut out = super::output::stdout();
    if table_view {
        let mut t = Table::new(&["FILES", "SIZE", "MODIFIED", "FOLDER"]).right(&[0, 1]);
        for r in &rows {
            t.row(vec![
                r.files.to_string(),
                ByteSize(r.bytes).to_string(),
                r.modified.clone(),
                r.path.clone(),
            ]);
        }
        t.print(&mut out)?;
        writeln!(out, "{} folders", rows.len())?;
        return Ok(exit::SUCCESS);
    }
    for (root, folders) in &per_root {
        let mut tree = super::tree::Node::default();
        for (rel, row) in folders {
            if rel.is_empty() {
                continue;
            }
            let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
            tree.at(&parts).label = row.modified.get(..10).unwrap_or("").to_string();
        }
        let title = folders
            .get(&Vec::new())
            .map(|r| r.path.clone())
            .unwrap_or_else(|| show(roots.get(root).map(Vec::as_slice).unwrap_or_default()));
        super::tree::print(&mut out, &title, &tree)?;
    }
    Ok(exit::SUCCESS)
}

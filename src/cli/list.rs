//! `lomob list dirs|bigfiles|files`: what the manifest holds, as tables or JSON Lines.
//!
//! `list files` streams: each row is printed as its record is read, in manifest order, and
//! which sites hold a file is looked up per file, so the first line comes at once and memory
//! does not grow with the library. Its table therefore has fixed column widths.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
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

/// Which sites hold a content, looked up per content among the sites that ever held one.
struct Copies<'m> {
    m: &'m Manifest,
    /// In name order.
    sites: Vec<String>,
}

impl<'m> Copies<'m> {
    fn new(m: &'m Manifest) -> anyhow::Result<Self> {
        Ok(Copies {
            m,
            sites: m.totals()?.sites.into_keys().collect(),
        })
    }

    /// None at all: for listings that do not show sites.
    fn none(m: &'m Manifest) -> Self {
        Copies {
            m,
            sites: Vec::new(),
        }
    }

    /// Each site holding `c`, archived (in a verified image) before staged.
    fn of(&self, c: &crate::manifest::ContentId) -> anyhow::Result<Vec<SiteCopy>> {
        let mut out = Vec::new();
        for site in &self.sites {
            let copy = if self.m.is_archived(site, c)? {
                "archived"
            } else if self.m.staged_record(site, c)?.is_some() {
                "staged"
            } else {
                continue;
            };
            out.push(SiteCopy {
                site: site.clone(),
                copy,
            });
        }
        Ok(out)
    }

    /// The widest SITES cell a file can have: every site, each as archived.
    fn width(&self) -> usize {
        let cells: Vec<String> = self
            .sites
            .iter()
            .map(|s| format!("{s} (archived)"))
            .collect();
        cells.join(", ").chars().count().max("SITES".len())
    }
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
            let mut rows = Vec::new();
            files(
                &m,
                &roots,
                &Copies::none(&m),
                ctx.json,
                |_, _, f, _| !f.is_deleted() && f.size >= file_size.bytes(),
                |row| {
                    rows.push(row);
                    Ok(())
                },
            )?;
            rows.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
            let mut out = FileOutput::new(ctx.json, 0);
            for r in rows {
                out.row(r)?;
            }
            out.finish()
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
            let copies = Copies::new(&m)?;
            let on_site = |c: &[SiteCopy], how: Option<&str>| {
                c.iter().any(|x| {
                    site.as_ref().is_none_or(|s| &x.site == s) && how.is_none_or(|h| x.copy == h)
                })
            };
            let mut out = FileOutput::new(ctx.json, copies.width());
            files(
                &m,
                &roots,
                &copies,
                ctx.json,
                |root, rel, f, c| {
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
                },
                |row| out.row(row),
            )?;
            out.finish()
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
    let d = crate::platform::names::canonical(d).unwrap_or_else(|_| d.to_path_buf());
    let bytes = crate::platform::names::path_bytes(&d);
    let bytes: &[u8] = &bytes;
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

/// Hands every file record `keep` accepts to `emit`, as a row, in manifest order. `keep`
/// runs before the costlier lookups (the sites holding it are looked up only when the filter
/// needs them, the content's SHA-256 only for rows kept).
/// `sha256`: look each file's SHA-256 up (a read at a random place in the manifest per
/// file, nine tenths of a million-line listing's time), for the JSON rows that show it.
fn files(
    m: &Manifest,
    roots: &HashMap<u32, Vec<u8>>,
    copies: &Copies,
    sha256: bool,
    keep: impl Fn(u32, &[u8], &FileRecord, &[SiteCopy]) -> bool,
    mut emit: impl FnMut(FileRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for kv in m.files() {
        let (root, rel, f) = kv?;
        let held = copies.of(&f.current().content)?;
        if !keep(root, &rel, &f, &held) {
            continue;
        }
        let root_path = roots.get(&root).cloned().unwrap_or_default();
        let content = match sha256 {
            true => m.content(&f.current().content)?,
            false => None,
        };
        emit(FileRow {
            path: show(&full_path(&root_path, &rel)),
            root: show(&root_path),
            size: f.size,
            mtime: output::rfc3339(f.mtime_ns.div_euclid(1_000_000_000)),
            versions: f.versions.len(),
            sha256: content.map(|c| hex::encode(c.sha256)).unwrap_or_default(),
            xxh3: hex::encode(f.current().content),
            deleted_at: f.deleted_at.map(output::rfc3339),
            sites: held,
        })?;
    }
    Ok(())
}

/// Prints file rows as they come: JSON Lines, or a table with fixed column widths (the
/// rows are not known in advance), then a total.
struct FileOutput {
    out: std::io::BufWriter<output::Writer>,
    json: bool,
    sites_width: usize,
    header: bool,
    files: u64,
    bytes: u64,
}

/// Fixed widths of SIZE, MODIFIED, VERSIONS and STATE.
const FILE_COLUMNS: [usize; 4] = [9, 16, 8, 7];

impl FileOutput {
    fn new(json: bool, sites_width: usize) -> Self {
        FileOutput {
            out: output::stdout(),
            json,
            sites_width: sites_width.max("SITES".len()),
            header: false,
            files: 0,
            bytes: 0,
        }
    }

    fn line(&mut self, cells: [&str; 6]) -> std::io::Result<()> {
        let [w0, w1, w2, w3] = FILE_COLUMNS;
        let s = format!(
            "{:>w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {:<w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w4 = self.sites_width
        );
        writeln!(self.out, "{}", s.trim_end())
    }

    fn row(&mut self, r: FileRow) -> anyhow::Result<()> {
        self.files += 1;
        self.bytes += r.size;
        if self.json {
            serde_json::to_writer(&mut self.out, &r)?;
            writeln!(self.out)?;
            return Ok(());
        }
        if !self.header {
            self.header = true;
            self.line(["SIZE", "MODIFIED", "VERSIONS", "STATE", "SITES", "PATH"])?;
        }
        let sites = if r.sites.is_empty() {
            "-".to_string()
        } else {
            r.sites
                .iter()
                .map(|c| format!("{} ({})", c.site, c.copy))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mtime = r.mtime.get(..16).unwrap_or(&r.mtime).replace('T', " ");
        let state = if r.deleted_at.is_some() {
            "deleted"
        } else {
            "present"
        };
        self.line([
            &ByteSize(r.size).to_string(),
            &mtime,
            &r.versions.to_string(),
            state,
            &sites,
            &r.path,
        ])?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<u8> {
        if !self.json {
            if !self.header {
                self.line(["SIZE", "MODIFIED", "VERSIONS", "STATE", "SITES", "PATH"])?;
            }
            writeln!(self.out, "{} files, {}", self.files, ByteSize(self.bytes))?;
        }
        self.out.flush()?;
        Ok(exit::SUCCESS)
    }
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
            row.path = crate::platform::names::path_of(&full).display().to_string();
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
    let mut out = super::output::stdout();
    if ctx.json {
        for r in &rows {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        }
        out.flush()?;
        return Ok(exit::SUCCESS);
    }
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

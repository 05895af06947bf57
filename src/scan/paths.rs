//! Recording the few paths a file watcher reported, without walking the whole root: what
//! the daemon does on every settled change.
//!
//! Each path is looked at as it is now. A regular file is hashed and recorded exactly as a
//! full scan would record it; a folder (one moved in, or created with files in it) is
//! walked; a path that is gone marks its file, or every file recorded under it, deleted.
//! The same rules as a full scan keep a missing disk from becoming a mass delete: nothing
//! is marked deleted when the root is missing, when the nearest folder still there is on
//! another file system than the file was (an unmounted NAS leaves its empty mount point),
//! or when more files would go than `max-delete` allows.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use super::hash::hash_file;
use super::walk::{walk, WalkEntry, WalkEvent, WalkOptions};
use super::{lossy, push_problem, Outcome, Recorder, ScanError, ScanOptions, ScanReport};
use crate::manifest::{self, FileStat, Manifest};
use crate::platform::{file, names};

/// Records the current state of `rels` (paths relative to `root`, '/'-separated) in the
/// manifest. `root` must be the canonical path the full scan records it under.
pub fn scan_paths(
    m: &Manifest,
    root: &Path,
    rels: &[Vec<u8>],
    opts: &ScanOptions,
) -> Result<ScanReport, ScanError> {
    let start = Instant::now();
    let mut report = ScanReport::default();
    if !root.is_dir() {
        push_problem(
            &mut report,
            root.display().to_string(),
            "the library root is missing (is the disk mounted?); nothing under it was marked deleted".into(),
        );
        return Ok(report);
    }
    report.roots.push(root.display().to_string());
    let now = manifest::now();
    let root_rec = m.ensure_root(&names::path_bytes(root), now)?;
    let ignored = Ignore::new(opts);

    let mut found: Vec<WalkEntry> = Vec::new();
    let mut candidates: Vec<(Vec<u8>, FileStat)> = Vec::new();
    let mut protected: Vec<Vec<u8>> = Vec::new();
    let mut seen_rel: HashSet<Vec<u8>> = HashSet::new();
    let mut rels: Vec<&Vec<u8>> = rels.iter().filter(|r| !ignored.path(r)).collect();
    rels.sort();
    rels.dedup();
    for rel in rels {
        let path = names::join(root, rel);
        let recorded_here = || -> Result<Vec<(Vec<u8>, FileStat)>, ScanError> {
            Ok(m.file_stats_under(root_rec.id, rel)?
                .into_iter()
                .filter(|(k, s)| {
                    s.deleted_at.is_none() && (k == rel || k.get(rel.len()) == Some(&b'/'))
                })
                .collect())
        };
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_file() => {
                if seen_rel.insert(rel.clone()) {
                    found.push(WalkEntry::from_metadata(rel.clone(), &md, || path.clone()));
                }
                // A folder replaced by a file: what was recorded under it is gone.
                candidates.extend(recorded_here()?.into_iter().filter(|(k, _)| k != rel));
            }
            Ok(md) if md.is_dir() => {
                let before = found.len();
                let dirs = walk_folder(root, rel, opts, &mut found, &mut protected);
                m.update_dirs(root_rec.id, &dirs, &[])?;
                for e in &found[before..] {
                    seen_rel.insert(e.rel.clone());
                }
                candidates.extend(recorded_here()?);
            }
            Ok(_) => {
                m.forget_dirs_under(root_rec.id, rel)?;
                candidates.extend(recorded_here()?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                m.forget_dirs_under(root_rec.id, rel)?;
                candidates.extend(recorded_here()?)
            }
            Err(e) => {
                push_problem(
                    &mut report,
                    path.display().to_string(),
                    format!("cannot read: {e}"),
                );
                protected.push(rel.clone());
            }
        }
    }

    // Creating, deleting or renaming an entry changes its folder's date: keep it current.
    let mut parents: Vec<(Vec<u8>, i64)> = Vec::new();
    for rel in rels_for_parents(&seen_rel, &candidates) {
        let path = names::join(root, &rel);
        if let Ok(md) = std::fs::symlink_metadata(&path) {
            if md.is_dir() {
                parents.push((rel, super::walk::mtime_ns(&md)));
            }
        }
    }
    m.update_dirs(root_rec.id, &parents, &[])?;

    // Unchanged files (as the manifest holds them) are not read again.
    let mut rec = Recorder::new(m, root, root_rec.id, now);
    let mut buf = Vec::new();
    for e in found {
        let stat = m.file_stat(root_rec.id, &e.rel)?;
        if stat.as_ref().is_some_and(|s| super::unchanged(s, &e)) {
            report.unchanged += 1;
            continue;
        }
        let path = names::join(root, &e.rel);
        let out = match hash_file(&path, &e, &mut buf) {
            Ok(h) => Outcome::Hashed(h, stat.is_some()),
            Err(err) => Outcome::Failed(e.rel.clone(), err),
        };
        rec.take(out, &mut report)?;
    }

    let mut gone_stats: Vec<(Vec<u8>, FileStat)> = Vec::new();
    let mut listed: HashSet<Vec<u8>> = HashSet::new();
    for (k, s) in candidates {
        let hidden = protected
            .iter()
            .any(|p| k == *p || (k.starts_with(p) && k.get(p.len()) == Some(&b'/')));
        if !seen_rel.contains(&k) && !hidden && listed.insert(k.clone()) {
            gone_stats.push((k, s));
        }
    }
    let gone = hold_deletions(root, gone_stats, opts, &mut report);
    let gone_refs: Vec<&Vec<u8>> = gone.iter().collect();
    rec.mark_deleted(gone_refs, &mut report)?;
    report.elapsed_secs = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The folders holding the paths looked at.
fn rels_for_parents(seen: &HashSet<Vec<u8>>, gone: &[(Vec<u8>, FileStat)]) -> HashSet<Vec<u8>> {
    seen.iter()
        .chain(gone.iter().map(|(k, _)| k))
        .map(|k| match k.iter().rposition(|&b| b == b'/') {
            Some(i) => k[..i].to_vec(),
            None => Vec::new(),
        })
        .collect()
}

/// The names a scan never records, applied to single paths.
struct Ignore<'a> {
    files: &'a [String],
    dirs: &'a [String],
}

impl<'a> Ignore<'a> {
    fn new(opts: &'a ScanOptions) -> Self {
        Ignore {
            files: &opts.ignore_files,
            dirs: &opts.ignore_dirs,
        }
    }

    fn path(&self, rel: &[u8]) -> bool {
        let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        let Some((last, folders)) = parts.split_last() else {
            return false;
        };
        folders
            .iter()
            .any(|p| self.dirs.iter().any(|d| d.as_bytes() == *p))
            || self.files.iter().any(|f| f.as_bytes() == *last)
            || self.dirs.iter().any(|d| d.as_bytes() == *last)
    }
}

fn walk_folder(
    root: &Path,
    rel: &[u8],
    opts: &ScanOptions,
    found: &mut Vec<WalkEntry>,
    protected: &mut Vec<Vec<u8>>,
) -> Vec<(Vec<u8>, i64)> {
    let bytes = |v: &[String]| v.iter().map(|s| s.as_bytes().to_vec()).collect();
    let walk_opts = WalkOptions {
        ignore_files: bytes(&opts.ignore_files),
        ignore_dirs: bytes(&opts.ignore_dirs),
        threads: opts.threads.clamp(1, 4),
    };
    let prefix = |r: &[u8]| {
        let mut p = rel.to_vec();
        if !r.is_empty() {
            p.push(b'/');
            p.extend_from_slice(r);
        }
        p
    };
    let files = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let dirs = Mutex::new(Vec::new());
    let sink = |ev: WalkEvent| match ev {
        WalkEvent::Folder { files: found, .. } => {
            if let Ok(mut v) = files.lock() {
                v.extend(found.into_iter().map(|mut e| {
                    e.rel = prefix(&e.rel);
                    e
                }));
            }
        }
        WalkEvent::Error { rel: r, .. } => {
            if let Ok(mut v) = errors.lock() {
                v.push(prefix(&r));
            }
        }
        WalkEvent::Dir { rel: r, mtime_ns } => {
            if let Ok(mut v) = dirs.lock() {
                v.push((prefix(&r), mtime_ns));
            }
        }
    };
    walk(&names::join(root, rel), &walk_opts, &sink);
    found.extend(files.into_inner().unwrap_or_else(|p| p.into_inner()));
    protected.extend(errors.into_inner().unwrap_or_else(|p| p.into_inner()));
    dirs.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Which of the files found gone may be marked deleted: see the module header.
fn hold_deletions(
    root: &Path,
    gone: Vec<(Vec<u8>, FileStat)>,
    opts: &ScanOptions,
    report: &mut ScanReport,
) -> Vec<Vec<u8>> {
    if gone.is_empty() || opts.allow_delete {
        return gone.into_iter().map(|(k, _)| k).collect();
    }
    let mut device_of: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
    let mut nearest_device = |rel: &[u8]| -> Option<u64> {
        let mut dir = rel.to_vec();
        loop {
            match dir.iter().rposition(|&b| b == b'/') {
                Some(i) => dir.truncate(i),
                None => dir.clear(),
            }
            if let Some(d) = device_of.get(&dir) {
                return *d;
            }
            let path = names::join(root, &dir);
            match std::fs::symlink_metadata(&path) {
                Ok(md) if md.is_dir() => {
                    let device = file::identity(&md, || path.clone()).device;
                    device_of.insert(dir.clone(), Some(device));
                    return Some(device);
                }
                _ if dir.is_empty() => return None,
                _ => continue,
            }
        }
    };
    let (keep, held): (Vec<_>, Vec<_>) = gone
        .into_iter()
        .partition(|(rel, stat)| nearest_device(rel) == Some(stat.device));
    if !held.is_empty() {
        report.deletions_held += held.len() as u64;
        push_problem(
            report,
            lossy(root, &held[0].0),
            format!(
                "{} file(s) are gone from a disk or mount that is not there now (an unmounted NAS or USB disk?); nothing was marked deleted. Mount it again, or, if they were really deleted, run `lomob scan --allow-delete`",
                held.len()
            ),
        );
    }
    let limit = opts.max_delete.unwrap_or(1000);
    if keep.len() as u64 > limit {
        report.deletions_held += keep.len() as u64;
        push_problem(
            report,
            root.display().to_string(),
            format!(
                "{} files were deleted at once, more than max-delete ({limit}); nothing was marked deleted. If they were really deleted, run `lomob scan --allow-delete` (or raise `max-delete` in [library])",
                keep.len()
            ),
        );
        return Vec::new();
    }
    keep.into_iter().map(|(k, _)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ScanOptions {
        ScanOptions {
            ignore_files: vec!["Thumbs.db".into()],
            ignore_dirs: vec![".git".into()],
            threads: 2,
            progress: false,
            max_delete: None,
            allow_delete: false,
        }
    }

    fn write(root: &Path, rel: &str, body: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    fn present(m: &Manifest, root: &Path) -> Vec<String> {
        let id = m
            .ensure_root(&crate::platform::names::path_bytes(root), 0)
            .unwrap()
            .id;
        m.file_stats_under(id, b"")
            .unwrap()
            .into_iter()
            .filter(|(_, s)| s.deleted_at.is_none())
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn records_new_moved_and_deleted_paths_like_a_scan() {
        let db = tempfile::tempdir().unwrap();
        let lib = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(lib.path()).unwrap();
        let m = Manifest::open(db.path()).unwrap();
        write(&root, "a.jpg", b"one");
        write(&root, "d/b.jpg", b"two");
        write(&root, "d/Thumbs.db", b"x");
        let r = scan_paths(&m, &root, &[b"a.jpg".to_vec(), b"d".to_vec()], &opts()).unwrap();
        assert_eq!((r.new, r.errors), (2, 0), "{r:?}");
        assert_eq!(present(&m, &root), ["a.jpg", "d/b.jpg"]);

        // A folder renamed: the old path is gone, the new one holds the same content.
        std::fs::rename(root.join("d"), root.join("e")).unwrap();
        let r = scan_paths(&m, &root, &[b"d".to_vec(), b"e".to_vec()], &opts()).unwrap();
        assert_eq!((r.new, r.deleted, r.renamed), (1, 1, 1), "{r:?}");
        assert_eq!(present(&m, &root), ["a.jpg", "e/b.jpg"]);

        // Unchanged files are not read again; a deleted one is marked.
        std::fs::remove_file(root.join("a.jpg")).unwrap();
        let r = scan_paths(
            &m,
            &root,
            &[b"a.jpg".to_vec(), b"e/b.jpg".to_vec()],
            &opts(),
        )
        .unwrap();
        assert_eq!((r.unchanged, r.deleted, r.files_hashed), (1, 1, 0), "{r:?}");
        assert_eq!(present(&m, &root), ["e/b.jpg"]);
    }

    #[test]
    fn a_missing_root_or_too_many_deletions_mark_nothing() {
        let db = tempfile::tempdir().unwrap();
        let lib = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(lib.path()).unwrap();
        let m = Manifest::open(db.path()).unwrap();
        for i in 0..5 {
            write(&root, &format!("p/{i}.jpg"), format!("{i}").as_bytes());
        }
        scan_paths(&m, &root, &[b"p".to_vec()], &opts()).unwrap();
        std::fs::remove_dir_all(root.join("p")).unwrap();
        let mut few = opts();
        few.max_delete = Some(3);
        let r = scan_paths(&m, &root, &[b"p".to_vec()], &few).unwrap();
        assert_eq!((r.deleted, r.deletions_held), (0, 5), "{r:?}");
        assert_eq!(present(&m, &root).len(), 5);

        let gone = root.join("nowhere");
        let r = scan_paths(&m, &gone, &[b"x".to_vec()], &opts()).unwrap();
        assert_eq!(r.errors, 1);
        assert!(r.problems[0].message.contains("mounted"), "{r:?}");
    }
}

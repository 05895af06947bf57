//! A parallel directory walk that stats every regular file without following symlinks.
//!
//! Directories are a shared work queue served by several threads, so a wide tree keeps every
//! core busy on `getdents` and `statx`, which is what a no-change rescan costs. Names are raw
//! bytes end to end: a non-UTF-8 name is recorded exactly as the file system holds it.
//! Symlinks are never followed, so loops cannot happen; other non-regular files are skipped.

use std::fs::Metadata;
use std::path::PathBuf;

use crate::platform::{file, names};
use std::sync::{Condvar, Mutex};

/// A regular file found by the walk, with the stat fields the manifest compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkEntry {
    /// Path relative to the root, '/'-separated, raw bytes.
    pub rel: Vec<u8>,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub device: u64,
    pub mode: u32,
}

impl WalkEntry {
    /// `path` is asked for only where the metadata lacks the file's identity (Windows).
    pub fn from_metadata(rel: Vec<u8>, m: &Metadata, path: impl FnOnce() -> PathBuf) -> Self {
        let id = file::identity(m, path);
        WalkEntry {
            rel,
            size: m.len(),
            mtime_ns: mtime_ns(m),
            inode: id.inode,
            device: id.device,
            mode: file::mode(m),
        }
    }
}

pub fn mtime_ns(m: &Metadata) -> i64 {
    file::mtime_ns(m)
}

/// What the walk reports to its sink, from any of its threads.
pub enum WalkEvent {
    /// One folder read to the end: its regular files (not ignored) and the names of its
    /// subfolders (not ignored), each list in the order the file system gave. Folder by
    /// folder, so a caller can compare a listing with what it knows of that one folder.
    Folder {
        rel: Vec<u8>,
        files: Vec<WalkEntry>,
        subdirs: Vec<Vec<u8>>,
    },
    /// A folder entered (the root too, with an empty `rel`), with its modification time:
    /// recorded so listings show folders that hold no files of their own.
    Dir { rel: Vec<u8>, mtime_ns: i64 },
    /// A directory or entry that could not be read. `rel` is relative to the root; nothing
    /// under it may be taken as deleted.
    Error { rel: Vec<u8>, error: std::io::Error },
}

pub struct WalkOptions {
    pub ignore_files: Vec<Vec<u8>>,
    pub ignore_dirs: Vec<Vec<u8>>,
    pub threads: usize,
}

struct Queue {
    dirs: Vec<Vec<u8>>,
    busy: usize,
}

/// Walks `root`, calling `sink` for every folder read and every error. Returns when done.
pub fn walk(root: &std::path::Path, opts: &WalkOptions, sink: &(dyn Fn(WalkEvent) + Sync)) {
    let queue = Mutex::new(Queue {
        dirs: vec![Vec::new()],
        busy: 0,
    });
    let ready = Condvar::new();
    if let Ok(m) = std::fs::symlink_metadata(root) {
        sink(WalkEvent::Dir {
            rel: Vec::new(),
            mtime_ns: mtime_ns(&m),
        });
    }
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| worker(root, opts, sink, &queue, &ready));
        }
    });
}

fn worker(
    root: &std::path::Path,
    opts: &WalkOptions,
    sink: &(dyn Fn(WalkEvent) + Sync),
    queue: &Mutex<Queue>,
    ready: &Condvar,
) {
    let mut found = Vec::new();
    loop {
        let dir = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(d) = q.dirs.pop() {
                    q.busy += 1;
                    break Some(d);
                }
                if q.busy == 0 {
                    break None;
                }
                q = ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(dir) = dir else {
            ready.notify_all();
            return;
        };
        read_one(root, &dir, opts, sink, &mut found);
        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
        q.busy -= 1;
        let had = !found.is_empty();
        q.dirs.append(&mut found);
        let done = q.busy == 0 && q.dirs.is_empty();
        drop(q);
        if had || done {
            ready.notify_all();
        }
    }
}

fn read_one(
    root: &std::path::Path,
    dir: &[u8],
    opts: &WalkOptions,
    sink: &(dyn Fn(WalkEvent) + Sync),
    subdirs: &mut Vec<Vec<u8>>,
) {
    let mut files = Vec::new();
    let mut names = Vec::new();
    let rd = match std::fs::read_dir(names::join(root, dir)) {
        Ok(rd) => rd,
        Err(error) => {
            sink(WalkEvent::Error {
                rel: dir.to_vec(),
                error,
            });
            return;
        }
    };
    for entry in rd {
        let entry = match entry {
            Ok(e) => e,
            Err(error) => {
                sink(WalkEvent::Error {
                    rel: dir.to_vec(),
                    error,
                });
                continue;
            }
        };
        let name = entry.file_name();
        let name = names::os_bytes(&name);
        let name: &[u8] = &name;
        let mut rel = Vec::with_capacity(dir.len() + 1 + name.len());
        if !dir.is_empty() {
            rel.extend_from_slice(dir);
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        let ft = match entry.file_type() {
            Ok(ft) => ft,
            Err(error) => {
                sink(WalkEvent::Error { rel, error });
                continue;
            }
        };
        if ft.is_dir() {
            if !opts.ignore_dirs.iter().any(|d| d == name) {
                if let Ok(m) = entry.metadata() {
                    sink(WalkEvent::Dir {
                        rel: rel.clone(),
                        mtime_ns: mtime_ns(&m),
                    });
                }
                names.push(name.to_vec());
                subdirs.push(rel);
            }
        } else if ft.is_file() {
            if opts.ignore_files.iter().any(|f| f == name) {
                continue;
            }
            match entry.metadata() {
                Ok(m) => {
                    let path = || entry.path();
                    files.push(WalkEntry::from_metadata(rel, &m, path))
                }
                Err(error) => sink(WalkEvent::Error { rel, error }),
            }
        }
        // Symlinks, sockets, FIFOs and devices are not library content.
    }
    sink(WalkEvent::Folder {
        rel: dir.to_vec(),
        files,
        subdirs: names,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn finds_files_skips_ignored_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("a/b/c")).unwrap();
        std::fs::create_dir_all(p.join(".git/objects")).unwrap();
        std::fs::write(p.join("a/b/c/x.jpg"), b"x").unwrap();
        std::fs::write(p.join("a/y.jpg"), b"yy").unwrap();
        std::fs::write(p.join("a/.DS_Store"), b"junk").unwrap();
        std::fs::write(p.join(".git/objects/o"), b"o").unwrap();
        std::os::unix::fs::symlink(p, p.join("a/loop")).unwrap();
        let found = Mutex::new(Vec::new());
        let opts = WalkOptions {
            ignore_files: vec![b".DS_Store".to_vec()],
            ignore_dirs: vec![b".git".to_vec()],
            threads: 3,
        };
        walk(p, &opts, &|e| {
            if let WalkEvent::Folder { files, .. } = e {
                found
                    .lock()
                    .unwrap()
                    .extend(files.into_iter().map(|f| (f.rel, f.size)))
            }
        });
        let mut found = found.into_inner().unwrap();
        found.sort();
        assert_eq!(
            found,
            vec![(b"a/b/c/x.jpg".to_vec(), 1), (b"a/y.jpg".to_vec(), 2)]
        );
    }
}

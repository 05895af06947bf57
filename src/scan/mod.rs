//! The scan: walk the library roots, notice what is new, changed or gone, hash what needs
//! hashing, and record it all in the manifest.
//!
//! Three stages run at once: walker threads list and stat each folder and merge the listing
//! with that folder's records, read in key order (subfolders' records are skipped, so memory
//! grows with a folder, not with the library); unchanged files (size, mtime and inode equal
//! to the manifest's) stop there. Hasher threads read the rest once for both hashes, and the
//! calling thread writes records in large batches. A rescan of an unchanged library therefore
//! costs one `statx` per file, one sequential read of the records and no database write.
//!
//! Nothing is ever dropped from the manifest: a changed file gains a version, a vanished one
//! is marked deleted with the time, and nothing under an unreadable folder (or a missing
//! root, such as an unmounted NAS) is taken as deleted.

pub mod hash;
pub mod paths;
pub mod walk;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::manifest::{
    self, ContentId, ContentRecord, FileRecord, FileStat, FolderItem, Manifest, ManifestBatch,
    ManifestError, Version,
};
use crate::platform::names;
use crate::progress::Progress;
use hash::{hash_file, HashError, Hashed};
use walk::{walk, WalkEntry, WalkEvent, WalkOptions};

/// How a scan runs.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub ignore_files: Vec<String>,
    pub ignore_dirs: Vec<String>,
    pub threads: usize,
    /// Draw a progress bar when stderr is a terminal.
    pub progress: bool,
    /// Most deletions one root may record without `allow_delete` (default: 1,000, or half
    /// of the root's files when fewer).
    pub max_delete: Option<u64>,
    /// Record deletions beyond `max_delete`, and those of a file system that seems gone.
    pub allow_delete: bool,
}

/// Something that could not be read; the scan went on without it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The full path, shown lossily when it is not UTF-8.
    pub path: String,
    pub message: String,
}

/// What a scan found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScanReport {
    pub roots: Vec<String>,
    /// Paths seen for the first time.
    pub new: u64,
    /// Paths whose content changed (a new version was recorded).
    pub changed: u64,
    /// Paths whose stat changed but whose content did not (no new version).
    pub touched: u64,
    pub unchanged: u64,
    /// Paths that disappeared since the last scan (kept, marked deleted).
    pub deleted: u64,
    /// Paths missing but not marked deleted: under a disk or mount that seems gone, or more
    /// than `max-delete` in a root (reported as problems; `--allow-delete` records them).
    pub deletions_held: u64,
    /// New paths holding the content of a path deleted in this scan.
    pub renamed: u64,
    /// New or changed paths whose content was already known (stored once).
    pub duplicates: u64,
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    pub elapsed_secs: f64,
    pub errors: u64,
    pub problems: Vec<Problem>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Keeps at most this many problems in the report; the count stays exact.
const MAX_PROBLEMS: usize = 1000;
/// Records per database batch.
const BATCH: usize = 8192;
/// Longest time between two batch writes, so an interrupted first scan keeps its work.
const CHECKPOINT: Duration = Duration::from_secs(5);

/// Whether a walked file is the one recorded: same size, mtime and inode, and present.
fn unchanged(stat: &FileStat, e: &WalkEntry) -> bool {
    stat.deleted_at.is_none()
        && stat.size == e.size
        && stat.mtime_ns == e.mtime_ns
        && stat.inode == e.inode
}

/// A file for the hashers, and whether the manifest has a record of its path.
struct Job {
    entry: WalkEntry,
    known: bool,
}

fn lossy(root: &Path, rel: &[u8]) -> String {
    if rel.is_empty() {
        root.display().to_string()
    } else {
        names::join(root, rel).display().to_string()
    }
}

/// Scans `roots` (absolute or relative folders) into the manifest.
pub fn scan(m: &Manifest, roots: &[PathBuf], opts: &ScanOptions) -> Result<ScanReport, ScanError> {
    let start = Instant::now();
    let mut report = ScanReport::default();
    let progress = Progress::new("scan", opts.progress);
    for root in roots {
        let root = match names::canonical(root) {
            Ok(r) if r.is_dir() => r,
            Ok(r) => {
                push_problem(
                    &mut report,
                    r.display().to_string(),
                    "is not a folder".into(),
                );
                continue;
            }
            Err(e) => {
                push_problem(
                    &mut report,
                    root.display().to_string(),
                    format!("cannot open library root: {e} (is the disk mounted?); nothing under it was marked deleted"),
                );
                continue;
            }
        };
        report.roots.push(root.display().to_string());
        scan_root(m, &root, opts, &progress, &mut report)?;
    }
    progress.finish();
    m.flush()?;
    report.elapsed_secs = start.elapsed().as_secs_f64();
    Ok(report)
}

fn push_problem(report: &mut ScanReport, path: String, message: String) {
    report.errors += 1;
    if report.problems.len() < MAX_PROBLEMS {
        report.problems.push(Problem { path, message });
    }
}

enum Outcome {
    /// Hashed, and whether the path had a record.
    Hashed(Hashed, bool),
    Failed(Vec<u8>, HashError),
}

/// What the walk learns besides the files it hands on: shared by the walker threads.
#[derive(Default)]
struct Walked {
    unchanged: AtomicU64,
    /// Records of present files read by the merges (the base of the max-delete limit).
    present: AtomicU64,
    /// File systems seen in this walk: a device no seen file was recorded on, or lives on,
    /// is gone (an unmounted disk leaves an empty folder on the file system below it).
    devices: Mutex<HashSet<u64>>,
    errors: Mutex<Vec<(Vec<u8>, std::io::Error)>>,
    dirs: Mutex<Vec<(Vec<u8>, i64)>>,
    /// Present records the walk did not find, with the device each was recorded on.
    gone: Mutex<Vec<(Vec<u8>, u64)>>,
    /// Where names ignore case: records whose file was found under the same name in
    /// another case (same folder, same file identity, size and time), with the entry.
    case_renames: Mutex<Vec<(Vec<u8>, WalkEntry)>>,
    /// The first manifest read that failed in a walker thread: the scan stops with it.
    failed: Mutex<Option<ManifestError>>,
}

fn scan_root(
    m: &Manifest,
    root: &Path,
    opts: &ScanOptions,
    progress: &Progress,
    report: &mut ScanReport,
) -> Result<(), ScanError> {
    let now = manifest::now();
    let root_rec = m.ensure_root(&names::path_bytes(root), now)?;
    let walked = Walked::default();
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(4096);
    let (out_tx, out_rx) = crossbeam_channel::bounded::<Outcome>(1024);
    let mut rec = Recorder::new(m, root, root_rec.id, now);
    rec.renames_possible = m.file_stats_iter(root_rec.id, b"").next().is_some();
    let mut result: Result<(), ScanError> = Ok(());
    std::thread::scope(|s| {
        let walked = &walked;
        let root_id = root_rec.id;
        s.spawn(move || walk_root(m, root, root_id, opts, walked, progress, job_tx));
        for _ in 0..opts.threads.max(1) {
            let (job_rx, out_tx) = (job_rx.clone(), out_tx.clone());
            s.spawn(move || hash_jobs(root, progress, job_rx, out_tx));
        }
        drop(out_tx);
        drop(job_rx);
        for out in &out_rx {
            // On a fatal error, drain so the workers can finish.
            if result.is_ok() {
                result = rec.take(out, report);
            }
        }
    });
    result?;
    if let Some(e) = walked
        .failed
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        return Err(e.into());
    }

    report.unchanged += walked.unchanged.load(Ordering::Relaxed);
    let errors = walked
        .errors
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let protected: Vec<Vec<u8>> = errors.iter().map(|(rel, _)| rel.clone()).collect();
    for (rel, e) in errors {
        push_problem(report, lossy(root, &rel), format!("cannot read: {e}"));
    }
    let devices = walked
        .devices
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let dirs = walked.dirs.into_inner().unwrap_or_else(|p| p.into_inner());
    record_dirs(m, root_rec.id, dirs, &protected, devices.is_empty())?;
    let mut gone = walked.gone.into_inner().unwrap_or_else(|p| p.into_inner());
    gone.retain(|(rel, _)| !under_any(rel, &protected));
    gone.sort_unstable();
    let present = walked.present.load(Ordering::Relaxed);
    let gone = hold_deletions(root, gone, present, &devices, opts, report);
    let case_renames = walked
        .case_renames
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    rec.move_case_renamed(case_renames, report)?;
    rec.mark_deleted(gone.iter().map(|(rel, _)| rel).collect(), report)
}

/// Pairs new names with gone records of one folder that name the same file in another case
/// (equal once upper-cased, same identity, size and modification time): a case-only rename
/// where the file system ignores case, recorded as a move of the record and its history
/// rather than a deletion and a new file. Removes the pairs from both lists.
fn pair_case_renames(
    fresh: &mut Vec<WalkEntry>,
    gone: &mut Vec<(Vec<u8>, FileStat)>,
) -> Vec<(Vec<u8>, WalkEntry)> {
    let fold = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_uppercase);
    let mut pairs = Vec::new();
    fresh.retain(|e| {
        let Some(key) = fold(&e.rel) else { return true };
        let found = gone.iter().position(|(rel, s)| {
            s.inode == e.inode
                && s.size == e.size
                && s.mtime_ns == e.mtime_ns
                && fold(rel).as_ref() == Some(&key)
        });
        match found {
            Some(i) => {
                pairs.push((gone.swap_remove(i).0, e.clone()));
                false
            }
            None => true,
        }
    });
    pairs
}

/// Whether `rel` is one of `prefixes` or lies under one (the empty prefix is the root).
fn under_any(rel: &[u8], prefixes: &[Vec<u8>]) -> bool {
    prefixes.iter().any(|p| {
        p.is_empty()
            || rel == p.as_slice()
            || (rel.starts_with(p) && rel.get(p.len()) == Some(&b'/'))
    })
}

/// Keeps the manifest's folder list in step with the walk: new and changed folders are
/// written, folders no longer there forgotten (not those behind an unreadable folder, and
/// none at all when the root looks unmounted).
fn record_dirs(
    m: &Manifest,
    root: u32,
    seen: Vec<(Vec<u8>, i64)>,
    protected: &[Vec<u8>],
    root_looks_gone: bool,
) -> Result<(), ScanError> {
    let known: HashMap<Vec<u8>, i64> = m.dirs_of_root(root)?.into_iter().collect();
    let seen_set: HashSet<&[u8]> = seen.iter().map(|(k, _)| k.as_slice()).collect();
    let put: Vec<(Vec<u8>, i64)> = seen
        .iter()
        .filter(|(k, t)| known.get(k) != Some(t))
        .cloned()
        .collect();
    let forget: Vec<Vec<u8>> = if root_looks_gone {
        Vec::new()
    } else {
        known
            .keys()
            .filter(|k| !seen_set.contains(k.as_slice()))
            .filter(|k| !under_any(k, protected))
            .cloned()
            .collect()
    };
    if !put.is_empty() || !forget.is_empty() {
        m.update_dirs(root, &put, &forget)?;
    }
    Ok(())
}

/// Walks the root, merging each folder's listing with its records: unchanged files stop
/// here (counted), everything else goes to the hashers; what cannot be read, the devices
/// seen and the records not found are noted in `walked`.
fn walk_root(
    m: &Manifest,
    root: &Path,
    root_id: u32,
    opts: &ScanOptions,
    walked: &Walked,
    progress: &Progress,
    job_tx: crossbeam_channel::Sender<Job>,
) {
    let bytes = |v: &[String]| v.iter().map(|s| s.as_bytes().to_vec()).collect();
    let walk_opts = WalkOptions {
        ignore_files: bytes(&opts.ignore_files),
        ignore_dirs: bytes(&opts.ignore_dirs),
        threads: opts.threads,
    };
    let sink = |ev: WalkEvent| match ev {
        WalkEvent::Folder {
            rel,
            files,
            subdirs,
        } => {
            let failed = walked.failed.lock().map(|f| f.is_some()).unwrap_or(true);
            if failed {
                return;
            }
            if let Err(e) =
                merge_folder(m, root_id, &rel, files, subdirs, walked, progress, &job_tx)
            {
                if let Ok(mut f) = walked.failed.lock() {
                    f.get_or_insert(e);
                }
            }
        }
        WalkEvent::Error { rel, error } => {
            if let Ok(mut v) = walked.errors.lock() {
                v.push((rel, error));
            }
        }
        WalkEvent::Dir { rel, mtime_ns } => {
            if let Ok(mut v) = walked.dirs.lock() {
                v.push((rel, mtime_ns));
            }
        }
    };
    walk(root, &walk_opts, &sink);
}

/// Merges one folder's listing with the folder's records, both in path order: a listed
/// file without a record is new, one whose stat differs is sent to be read, a present
/// record without a listed file is gone, and so is every present record under a recorded
/// subfolder the listing no longer has.
#[allow(clippy::too_many_arguments)]
fn merge_folder(
    m: &Manifest,
    root_id: u32,
    dir: &[u8],
    mut files: Vec<WalkEntry>,
    mut subdirs: Vec<Vec<u8>>,
    walked: &Walked,
    progress: &Progress,
    job_tx: &crossbeam_channel::Sender<Job>,
) -> Result<(), ManifestError> {
    files.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    subdirs.sort_unstable();
    let mut devices: HashSet<u64> = files.iter().map(|e| e.device).collect();
    let (mut unchanged_files, mut present) = (0u64, 0u64);
    let mut gone = Vec::new();
    let mut vanished = Vec::new();
    // The receiver only goes away on a fatal error; then the walk result no longer matters.
    let send = |entry: WalkEntry, known: bool| {
        let _ = job_tx.send(Job { entry, known });
    };
    // Where names ignore case, new names and gone records are kept until the folder is
    // merged, to pair a file renamed in case only with its record.
    let mut fresh: Vec<WalkEntry> = Vec::new();
    let mut gone_stats: Vec<(Vec<u8>, FileStat)> = Vec::new();
    let mut new_name = |e: WalkEntry| {
        if names::FOLD_CASE {
            fresh.push(e);
        } else {
            send(e, false);
        }
    };
    let mut listed = files.into_iter().peekable();
    m.for_each_in_folder(root_id, dir, |item| {
        match item {
            FolderItem::File(rel, stat) => {
                while let Some(e) = listed.next_if(|e| e.rel.as_slice() < rel) {
                    new_name(e);
                }
                let present_record = stat.deleted_at.is_none();
                present += u64::from(present_record);
                match listed.next_if(|e| e.rel.as_slice() == rel) {
                    Some(e) if unchanged(&stat, &e) => {
                        devices.insert(stat.device);
                        unchanged_files += 1;
                    }
                    Some(e) => {
                        devices.insert(stat.device);
                        send(e, true);
                    }
                    None if present_record && names::FOLD_CASE => {
                        gone_stats.push((rel.to_vec(), stat))
                    }
                    None if present_record => gone.push((rel.to_vec(), stat.device)),
                    None => {}
                }
            }
            FolderItem::Subfolder(name) => {
                if subdirs
                    .binary_search_by(|s| s.as_slice().cmp(name))
                    .is_err()
                {
                    vanished.push(name.to_vec());
                }
            }
        }
        Ok(())
    })?;
    for e in listed {
        new_name(e);
    }
    if names::FOLD_CASE {
        let renames = pair_case_renames(&mut fresh, &mut gone_stats);
        unchanged_files += renames.len() as u64;
        for e in fresh {
            send(e, false);
        }
        gone.extend(gone_stats.into_iter().map(|(rel, s)| (rel, s.device)));
        if !renames.is_empty() {
            if let Ok(mut r) = walked.case_renames.lock() {
                r.extend(renames);
            }
        }
    }
    for name in vanished {
        let mut prefix = dir.to_vec();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(&name);
        prefix.push(b'/');
        for kv in m.file_stats_iter(root_id, &prefix) {
            let (rel, stat) = kv?;
            if stat.deleted_at.is_none() {
                present += 1;
                gone.push((rel, stat.device));
            }
        }
    }
    progress.add(unchanged_files, 0);
    walked
        .unchanged
        .fetch_add(unchanged_files, Ordering::Relaxed);
    walked.present.fetch_add(present, Ordering::Relaxed);
    if let Ok(mut d) = walked.devices.lock() {
        d.extend(devices);
    }
    if !gone.is_empty() {
        if let Ok(mut g) = walked.gone.lock() {
            g.append(&mut gone);
        }
    }
    Ok(())
}

/// One hasher thread: reads each file it is given once, for both hashes.
fn hash_jobs(
    root: &Path,
    progress: &Progress,
    jobs: crossbeam_channel::Receiver<Job>,
    out: crossbeam_channel::Sender<Outcome>,
) {
    let mut buf = Vec::new();
    for Job { entry: e, known } in jobs {
        let path = names::join(root, &e.rel);
        let o = match hash_file(&path, &e, &mut buf) {
            Ok(h) => {
                progress.add(1, h.entry.size);
                Outcome::Hashed(h, known)
            }
            Err(err) => Outcome::Failed(e.rel, err),
        };
        if out.send(o).is_err() {
            return;
        }
    }
}

/// Writes what the hashers found into the manifest, in large batches.
struct Recorder<'a> {
    m: &'a Manifest,
    root: &'a Path,
    root_id: u32,
    now: i64,
    batch: ManifestBatch,
    new_contents: HashSet<ContentId>,
    /// Contents of paths seen for the first time (for rename detection); not kept when
    /// the root had no records, as in a first scan, where nothing can have been renamed.
    new_paths_contents: Vec<ContentId>,
    renames_possible: bool,
    last_write: Instant,
}

impl<'a> Recorder<'a> {
    fn new(m: &'a Manifest, root: &'a Path, root_id: u32, now: i64) -> Self {
        Recorder {
            m,
            root,
            root_id,
            now,
            batch: ManifestBatch::default(),
            new_contents: HashSet::new(),
            new_paths_contents: Vec::new(),
            renames_possible: true,
            last_write: Instant::now(),
        }
    }

    fn take(&mut self, out: Outcome, report: &mut ScanReport) -> Result<(), ScanError> {
        match out {
            Outcome::Failed(rel, err) => {
                push_problem(report, lossy(self.root, &rel), err.to_string());
            }
            Outcome::Hashed(h, known) => {
                report.files_hashed += 1;
                report.bytes_hashed += h.entry.size;
                let prev = if known {
                    self.m.file(self.root_id, &h.entry.rel)?
                } else {
                    None
                };
                let new_path = record(
                    self.m,
                    self.root,
                    self.root_id,
                    prev.as_ref(),
                    &h,
                    self.now,
                    &mut self.batch,
                    &mut self.new_contents,
                    report,
                )?;
                if self.renames_possible {
                    self.new_paths_contents.extend(new_path);
                }
            }
        }
        if self.batch.len() >= BATCH || self.last_write.elapsed() >= CHECKPOINT {
            self.m.apply(std::mem::take(&mut self.batch))?;
            self.new_contents.clear();
            self.last_write = Instant::now();
        }
        Ok(())
    }

    /// Moves the records of files renamed in case only (where names ignore case) to their
    /// new names, history and all; counted as renames.
    fn move_case_renamed(
        &mut self,
        moves: Vec<(Vec<u8>, WalkEntry)>,
        report: &mut ScanReport,
    ) -> Result<(), ScanError> {
        for (from, e) in moves {
            let Some(mut rec) = self.m.file(self.root_id, &from)? else {
                continue;
            };
            rec.mode = e.mode;
            self.batch.move_file(self.root_id, &from, &e.rel, &rec);
            report.renamed += 1;
        }
        Ok(())
    }

    /// Marks the files found gone as deleted (never dropped), counts renames, and writes
    /// the last batch.
    fn mark_deleted(
        mut self,
        gone: Vec<&Vec<u8>>,
        report: &mut ScanReport,
    ) -> Result<(), ScanError> {
        let mut gone_contents: HashSet<ContentId> = HashSet::new();
        for rel in gone {
            let Some(mut rec) = self.m.file(self.root_id, rel)? else {
                continue;
            };
            rec.deleted_at = Some(self.now);
            gone_contents.insert(rec.current().content);
            self.batch.put_file(self.root_id, rel, &rec);
            report.deleted += 1;
        }
        report.renamed += self
            .new_paths_contents
            .iter()
            .filter(|c| gone_contents.contains(*c))
            .count() as u64;
        self.m.apply(self.batch)?;
        Ok(())
    }
}

/// Which of the missing files may be marked deleted. A missing disk is not a mass delete:
/// files of a file system no seen file is on (an unmounted NAS, a USB disk, an emptied mount
/// point), and every file of a root found empty, are held and reported; so are all the
/// deletions of a root when there are more than `max-delete`, unless `--allow-delete`.
fn hold_deletions(
    root: &Path,
    gone: Vec<(Vec<u8>, u64)>,
    present: u64,
    devices: &HashSet<u64>,
    opts: &ScanOptions,
    report: &mut ScanReport,
) -> Vec<(Vec<u8>, u64)> {
    if gone.is_empty() || opts.allow_delete {
        return gone;
    }
    let mut held = |n: u64, message: String| {
        report.deletions_held += n;
        push_problem(report, root.display().to_string(), message);
    };
    if devices.is_empty() {
        held(
            gone.len() as u64,
            format!("the folder is empty but held {present} files at the last scan (is the disk mounted?); nothing was marked deleted. If they were really deleted, scan with --allow-delete"),
        );
        return Vec::new();
    }
    let (on_gone_fs, rest): (Vec<_>, Vec<_>) = gone
        .into_iter()
        .partition(|(_, device)| !devices.contains(device));
    if !on_gone_fs.is_empty() {
        let paths: Vec<Vec<u8>> = on_gone_fs.into_iter().map(|(rel, _)| rel).collect();
        let under = common_folder(&paths);
        held(
            paths.len() as u64,
            format!(
                "{} files under {} were on a disk or mount that is not there now (an unmounted NAS or USB disk?); nothing was marked deleted. Mount it and scan again, or, if they were really deleted, scan with --allow-delete",
                paths.len(),
                lossy(root, &under)
            ),
        );
    }
    let limit = opts.max_delete.unwrap_or_else(|| (present / 2).min(1000));
    if rest.len() as u64 > limit {
        held(
            rest.len() as u64,
            format!(
                "{} of its {present} files are gone, more than max-delete ({limit}); nothing was marked deleted. If they were really deleted, scan with --allow-delete (or raise `max-delete` in [library])",
                rest.len()
            ),
        );
        return Vec::new();
    }
    rest
}

/// The longest folder holding every one of `paths`.
fn common_folder(paths: &[Vec<u8>]) -> Vec<u8> {
    let mut common: Vec<&[u8]> = match paths.first() {
        Some(p) => p.split(|&b| b == b'/').collect(),
        None => return Vec::new(),
    };
    common.pop();
    for p in paths {
        let segs: Vec<&[u8]> = p.split(|&b| b == b'/').collect();
        let n = common
            .iter()
            .zip(&segs[..segs.len() - 1])
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(n);
    }
    common.join(&b'/')
}

/// Adds the record for one hashed file to `batch`. Returns the content id when the path is
/// new (for rename detection).
#[allow(clippy::too_many_arguments)]
fn record(
    m: &Manifest,
    root: &Path,
    root_id: u32,
    prev: Option<&FileRecord>,
    h: &Hashed,
    now: i64,
    batch: &mut ManifestBatch,
    new_contents: &mut HashSet<ContentId>,
    report: &mut ScanReport,
) -> Result<Option<ContentId>, ScanError> {
    let e = &h.entry;
    let version = Version {
        content: h.xxh3,
        size: e.size,
        mtime_ns: e.mtime_ns,
        recorded: now,
    };
    let content_is_new_version = prev.is_none_or(|p| p.current().content != h.xxh3);
    if content_is_new_version {
        match m.content(&h.xxh3)? {
            Some(known) if known.sha256 != h.sha256 || known.size != e.size => {
                // Two different contents with one xxh3-128: astronomically unlikely, and
                // recording it would merge them. Refuse this file loudly instead.
                push_problem(
                    report,
                    lossy(root, &e.rel),
                    "xxh3 collision with a different content already recorded; not recorded, please report this".into(),
                );
                return Ok(None);
            }
            Some(_) => report.duplicates += 1,
            None if new_contents.contains(&h.xxh3) => report.duplicates += 1,
            None => {
                batch.put_content(
                    &h.xxh3,
                    &ContentRecord {
                        size: e.size,
                        sha256: h.sha256,
                        first_seen: now,
                    },
                );
                new_contents.insert(h.xxh3);
            }
        }
    }
    let (rec, new_path) = match prev {
        None => {
            report.new += 1;
            (
                FileRecord {
                    size: e.size,
                    mtime_ns: e.mtime_ns,
                    inode: e.inode,
                    device: e.device,
                    mode: e.mode,
                    first_seen: now,
                    deleted_at: None,
                    versions: vec![version],
                },
                true,
            )
        }
        Some(p) => {
            let mut rec = p.clone();
            if content_is_new_version {
                rec.versions.push(version);
                report.changed += 1;
            } else {
                report.touched += 1;
            }
            rec.size = e.size;
            rec.mtime_ns = e.mtime_ns;
            rec.inode = e.inode;
            rec.device = e.device;
            rec.mode = e.mode;
            rec.deleted_at = None;
            (rec, false)
        }
    };
    batch.put_file(root_id, &e.rel, &rec);
    Ok(new_path.then_some(h.xxh3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ScanOptions {
        ScanOptions {
            ignore_files: vec![],
            ignore_dirs: vec![".git".into()],
            threads: 3,
            progress: false,
            max_delete: Some(100),
            allow_delete: false,
        }
    }

    fn write(root: &Path, rel: &str, body: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    /// Names in another case are other files where the file system says so (Linux): both are
    /// recorded, and a case-only rename is a rename like any other (a deletion and a new
    /// path, counted as renamed).
    #[test]
    fn names_in_another_case_are_other_files_on_a_case_sensitive_disk() {
        if names::FOLD_CASE {
            return; // `a.jpg` and `A.jpg` cannot both exist there.
        }
        let lib = tempfile::tempdir().unwrap();
        let db = tempfile::tempdir().unwrap();
        let root = lib.path();
        write(root, "a.jpg", b"lower");
        write(root, "A.jpg", b"upper");
        let m = Manifest::open(db.path()).unwrap();
        let roots = [root.to_path_buf()];
        let first = scan(&m, &roots, &opts()).unwrap();
        assert_eq!((first.new, first.duplicates), (2, 0));
        std::fs::rename(root.join("a.jpg"), root.join("B.JPG")).unwrap();
        std::fs::rename(root.join("B.JPG"), root.join("b.jpg")).unwrap();
        std::fs::rename(root.join("A.jpg"), root.join("A.JPG")).unwrap();
        let second = scan(&m, &roots, &opts()).unwrap();
        assert_eq!((second.new, second.deleted, second.renamed), (2, 2, 2));
        let (kept, counted) = m.recount_totals().unwrap();
        assert_eq!(kept, counted);
    }

    fn entry(rel: &str, inode: u64) -> WalkEntry {
        WalkEntry {
            rel: rel.as_bytes().to_vec(),
            size: 10,
            mtime_ns: 5,
            inode,
            device: 1,
            mode: 0o100644,
        }
    }

    fn stat_of(e: &WalkEntry) -> FileStat {
        FileStat {
            size: e.size,
            mtime_ns: e.mtime_ns,
            inode: e.inode,
            device: e.device,
            mode: e.mode,
            first_seen: 1,
            deleted_at: None,
        }
    }

    /// Only the same file (identity, size, time) under a name equal but for case pairs.
    #[test]
    fn a_case_only_rename_pairs_the_same_file_only() {
        let mut fresh = vec![
            entry("d/IMG_0001.JPG", 7),
            entry("d/img_0002.jpg", 8),
            entry("d/Été.png", 9),
            entry("d/other.jpg", 10),
        ];
        let mut gone = vec![
            ("d/img_0001.jpg".as_bytes().to_vec(), stat_of(&entry("", 7))),
            // Same name in another case, but another file (a new inode): not a rename.
            (
                "d/IMG_0002.JPG".as_bytes().to_vec(),
                stat_of(&entry("", 99)),
            ),
            ("d/éTÉ.png".as_bytes().to_vec(), stat_of(&entry("", 9))),
        ];
        let pairs = pair_case_renames(&mut fresh, &mut gone);
        let names: Vec<(String, String)> = pairs
            .iter()
            .map(|(from, e)| {
                (
                    String::from_utf8(from.clone()).unwrap(),
                    String::from_utf8(e.rel.clone()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("d/img_0001.jpg".into(), "d/IMG_0001.JPG".into()),
                ("d/éTÉ.png".into(), "d/Été.png".into())
            ]
        );
        assert_eq!(fresh.len(), 2);
        assert_eq!(gone.len(), 1);
    }

    /// Each folder's listing is merged with its records: names that sort around a
    /// subfolder's records ('!' and '.' before '/', '0' after), whole subtrees gone, a
    /// folder replaced by a file of the same name, and an ignored folder.
    #[test]
    fn a_rescan_merges_each_folder_with_its_records() {
        let lib = tempfile::tempdir().unwrap();
        let db = tempfile::tempdir().unwrap();
        let root = lib.path();
        for rel in [
            "top.jpg",
            "a/b.jpg",
            "a/b!.jpg",
            "a/b0.jpg",
            "a/b/x.jpg",
            "a/b/y/z.jpg",
            "a/c/d.jpg",
            "deep/1/2/3/f.jpg",
            "n/m.jpg",
            "skip/s.jpg",
        ] {
            write(root, rel, rel.as_bytes());
        }
        let m = Manifest::open(db.path()).unwrap();
        let roots = [root.to_path_buf()];
        let first = scan(&m, &roots, &opts()).unwrap();
        assert_eq!((first.new, first.deleted), (10, 0));

        std::fs::remove_dir_all(root.join("deep")).unwrap();
        std::fs::remove_dir_all(root.join("n")).unwrap();
        write(root, "n", b"now a file");
        std::fs::remove_dir_all(root.join("a/b/y")).unwrap();
        write(root, "a/b.jpg", b"changed, and longer");
        write(root, "a/b/new.jpg", b"new");
        std::fs::rename(root.join("skip"), root.join(".git")).unwrap();
        let second = scan(&m, &roots, &opts()).unwrap();
        assert_eq!(
            (second.new, second.changed, second.deleted, second.unchanged),
            (2, 1, 4, 5),
            "{second:?}"
        );
        assert_eq!(second.deletions_held, 0);
        let deleted: Vec<String> = m
            .file_stats_under(1, b"")
            .unwrap()
            .into_iter()
            .filter(|(_, s)| s.deleted_at.is_some())
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect();
        assert_eq!(
            deleted,
            ["a/b/y/z.jpg", "deep/1/2/3/f.jpg", "n/m.jpg", "skip/s.jpg"]
        );

        let third = scan(&m, &roots, &opts()).unwrap();
        assert_eq!(
            (third.new, third.changed, third.deleted, third.unchanged),
            (0, 0, 0, 8),
            "{third:?}"
        );
    }
}

//! Rewriting the database into a fresh copy once much of its file is old page versions.
//!
//! sled writes every change to the end of its log and frees a stretch of the log only when
//! at most half of it is still in use, so a manifest that was written heavily (a first scan
//! rewrites each page of contents a dozen times, as ids land at random) holds three to
//! four times its records on disk. Copying the trees into a new database in key order
//! writes each page once. It runs when the page bytes written since the last copy reach
//! half the file: its cost, a read and a write of the live records, is then at most what
//! those writes cost.
//!
//! It is also how a database made without compression (before schema 4) gets it.
//!
//! Crash safety: the copy is built in `db.compact`, read back and compared, and made
//! durable; only then is `db` renamed to `db.old` and the copy to `db`. An open finds at
//! most one of those steps half done and finishes or undoes it ([`recover`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use xxhash_rust::xxh3::Xxh3;

use super::paged::Records;
use super::{ManifestError, Result};

/// `meta` key: page bytes written since the database was last copied (u64, big-endian).
pub(super) const WRITTEN_KEY: &[u8] = b"written-since-compaction";

/// Below this many bytes written the copy is not worth an open's time.
const MIN_WRITTEN: u64 = 32 << 20;

/// Set when a write in this process made a copy worthwhile, so the command ends with one.
static WANTED: AtomicBool = AtomicBool::new(false);

/// Records per batch of the copy.
const BATCH: usize = 1000;

/// True when a write of this process left the manifest worth copying (see
/// [`super::Manifest::compact`]).
pub fn wanted() -> bool {
    WANTED.load(Ordering::Relaxed)
}

pub(super) fn read_written(meta: &sled::Tree) -> Result<u64> {
    Ok(meta
        .get(WRITTEN_KEY)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// Whether `written` bytes since the last copy make a copy of `db` worthwhile.
pub(super) fn worthwhile(db: &sled::Db, written: u64) -> Result<bool> {
    Ok(written >= MIN_WRITTEN && written.saturating_mul(2) >= db.size_on_disk()?)
}

/// Whether the database in `dir` was made with compression; `None` for a new one.
pub(super) fn compressed(dir: &Path) -> Option<bool> {
    // Text lines, then a checksum that is not text.
    let conf = std::fs::read(dir.join("conf")).ok()?;
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("use_compression:"))
        .map(|v| v.trim() == "true")
}

/// Notes that the manifest should be copied when the command ends.
pub(super) fn want() {
    WANTED.store(true, Ordering::Relaxed);
}

fn paths(manifest: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        manifest.join("db"),
        manifest.join("db.compact"),
        manifest.join("db.old"),
    )
}

/// Finishes or undoes a copy that was stopped, before the database is opened.
pub(super) fn recover(manifest: &Path) -> Result<()> {
    let (live, fresh, old) = paths(manifest);
    if live.exists() {
        // Stopped while the copy was made (it is incomplete) or after the swap.
        remove_dir(&fresh)?;
        return remove_dir(&old);
    }
    if old.exists() {
        // Stopped between the two renames: the copy was complete and verified before the
        // database was moved aside.
        let from = if fresh.exists() { &fresh } else { &old };
        tracing::info!(
            "finishing the compaction of manifest {} that was stopped",
            manifest.display()
        );
        std::fs::rename(from, &live).map_err(io(from))?;
        remove_dir(&old)?;
    }
    Ok(())
}

/// Copies every tree of `db` (the database in `manifest/db`) into a new database, verifies
/// the copy, and puts it in the old one's place. `open` opens a database folder with the
/// manifest's settings; the new database is returned open.
pub(super) fn run(
    manifest: &Path,
    db: sled::Db,
    open: impl Fn(&Path) -> Result<sled::Db>,
) -> Result<sled::Db> {
    let (live, fresh, old) = paths(manifest);
    let before = db.size_on_disk()?;
    let started = std::time::Instant::now();
    remove_dir(&fresh)?;
    let copied = open(&fresh).and_then(|copy| {
        copy_verified(&db, &copy)?;
        copy.flush()?;
        Ok(copy.size_on_disk()?)
    });
    drop(db);
    let after = match copied {
        Ok(size) => size,
        Err(e) => {
            // Best effort: a copy left behind is removed by the next open.
            let _ = remove_dir(&fresh);
            return Err(e);
        }
    };
    rename_when_released(&live, &old)?;
    std::fs::rename(&fresh, &live).map_err(io(&fresh))?;
    crate::platform::file::sync_dir(manifest).map_err(io(manifest))?;
    remove_dir(&old)?;
    tracing::info!(
        "compacted manifest {}: {} MB -> {} MB in {:.1} s",
        manifest.display(),
        before >> 20,
        after >> 20,
        started.elapsed().as_secs_f64()
    );
    open(&live)
}

/// Copies every tree of `db` into `copy` in key order and reads each back, comparing a
/// hash of its records with one of what was written.
fn copy_verified(db: &sled::Db, copy: &sled::Db) -> Result<()> {
    for name in db.tree_names() {
        let (from, to) = (db.open_tree(&name)?, copy.open_tree(&name)?);
        let skip = |k: &[u8]| name.as_ref() == b"meta" && k == WRITTEN_KEY;
        let mut written = Xxh3::new();
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in Records::all(&from) {
            let (k, v) = kv?;
            if skip(&k) {
                continue;
            }
            hash_pair(&mut written, &k, &v);
            batch.insert(k, v);
            n += 1;
            if n % BATCH == 0 {
                to.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        to.apply_batch(batch)?;
        let mut read = Xxh3::new();
        for kv in Records::all(&to) {
            let (k, v) = kv?;
            hash_pair(&mut read, &k, &v);
        }
        if read.digest128() != written.digest128() {
            return Err(ManifestError::Corrupt {
                what: format!("compacted copy of tree {}", String::from_utf8_lossy(&name)),
                reason:
                    "it reads back different from what was written; the manifest was left as it was"
                        .into(),
            });
        }
    }
    Ok(())
}

fn hash_pair(h: &mut Xxh3, k: &[u8], v: &[u8]) {
    h.update(&(k.len() as u64).to_le_bytes());
    h.update(k);
    h.update(&(v.len() as u64).to_le_bytes());
    h.update(v);
}

/// Renames a database folder that sled may still hold for a moment after its handle was
/// dropped (its flusher thread lets go of the files shortly after; Windows refuses to move
/// a folder with open files).
fn rename_when_released(from: &Path, to: &Path) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match std::fs::rename(from, to) {
            Ok(()) => return Ok(()),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(io(from)(e)),
        }
    }
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    /// A manifest whose pages were rewritten many times, and its files' records.
    fn rewritten_manifest(dir: &Path) -> Vec<(u32, Vec<u8>, FileRecord)> {
        let m = Manifest::open(dir).unwrap();
        for round in 0..30u8 {
            let mut b = ManifestBatch::default();
            for i in 0..400u32 {
                let c = xxhash_rust::xxh3::xxh3_128(&[&i.to_be_bytes()[..], &[round]].concat())
                    .to_be_bytes();
                let rec = ContentRecord {
                    size: 10,
                    sha256: [round; 32],
                    first_seen: 1,
                };
                b.put_content(&c, &rec);
                let rel = format!("folder {}/file {i}", i % 9);
                b.put_file(
                    1,
                    rel.as_bytes(),
                    &FileRecord::one_version(c, 10, round as i64),
                );
            }
            m.apply(b).unwrap();
        }
        m.flush().unwrap();
        m.files().map(Result::unwrap).collect()
    }

    fn mark_written(dir: &Path, n: u64) {
        let m = Manifest::open_raw(dir).unwrap();
        m.meta.insert(WRITTEN_KEY, &n.to_be_bytes()).unwrap();
        m.flush().unwrap();
    }

    #[test]
    fn a_heavily_rewritten_manifest_is_copied_smaller_and_equal() {
        let dir = tempfile::tempdir().unwrap();
        let files = rewritten_manifest(dir.path());
        let before = Manifest::open(dir.path())
            .unwrap()
            .db
            .size_on_disk()
            .unwrap();
        mark_written(dir.path(), u64::MAX / 4);
        let m = Manifest::open(dir.path()).unwrap();
        let after = m.db.size_on_disk().unwrap();
        assert!(after * 2 < before, "{before} -> {after} bytes");
        assert_eq!(m.files().map(Result::unwrap).collect::<Vec<_>>(), files);
        assert_eq!(read_written(&m.meta).unwrap(), 0);
        let (kept, counted) = m.recount_totals().unwrap();
        assert_eq!(kept, counted);
        assert!(!dir.path().join("db.compact").exists());
        assert!(!dir.path().join("db.old").exists());
    }

    #[test]
    fn a_small_write_count_leaves_the_database_alone() {
        let dir = tempfile::tempdir().unwrap();
        rewritten_manifest(dir.path());
        mark_written(dir.path(), MIN_WRITTEN - 1);
        let before = std::fs::metadata(dir.path().join("db/db")).unwrap();
        let m = Manifest::open(dir.path()).unwrap();
        let after = std::fs::metadata(dir.path().join("db/db")).unwrap();
        assert_eq!(before.ino_or_len(), after.ino_or_len());
        assert_eq!(read_written(&m.meta).unwrap(), MIN_WRITTEN - 1);
    }

    trait Identity {
        fn ino_or_len(&self) -> u64;
    }
    impl Identity for std::fs::Metadata {
        #[cfg(unix)]
        fn ino_or_len(&self) -> u64 {
            std::os::unix::fs::MetadataExt::ino(self)
        }
        #[cfg(not(unix))]
        fn ino_or_len(&self) -> u64 {
            self.len()
        }
    }

    #[test]
    fn a_copy_stopped_at_any_step_is_finished_or_undone() {
        let dir = tempfile::tempdir().unwrap();
        let files = rewritten_manifest(dir.path());
        let (live, fresh, old) = paths(dir.path());
        let copy_of = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
                }
            }
        };
        // Stopped while the copy was written: a partial copy beside the database.
        std::fs::create_dir_all(fresh.join("blobs")).unwrap();
        std::fs::write(fresh.join("db"), b"half a copy").unwrap();
        let m = Manifest::open(dir.path()).unwrap();
        assert_eq!(m.files().count(), files.len());
        drop(m);
        assert!(!fresh.exists());
        // Stopped between the renames: the database moved aside, its copy complete.
        copy_of(&live, &fresh);
        std::fs::rename(&live, &old).unwrap();
        let m = Manifest::open(dir.path()).unwrap();
        assert_eq!(m.files().map(Result::unwrap).collect::<Vec<_>>(), files);
        drop(m);
        assert!(!fresh.exists() && !old.exists());
        // Stopped before the old folder was removed.
        copy_of(&live, &old);
        let m = Manifest::open(dir.path()).unwrap();
        assert_eq!(m.files().count(), files.len());
        assert!(!old.exists());
    }
}

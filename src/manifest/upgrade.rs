//! The rewrite of a manifest from before schema 4 (one sled value per record) into pages,
//! done in place at its first open by this version.
//!
//! The user's only record of where every copy lives must survive a kill, a full disk or a
//! bug at any step, so: the database folder is copied aside first; the pages are written
//! beside the old trees, which stay untouched; every record is then read back from both
//! and compared; only then does the schema move to 4 (one write), the old trees go, and
//! last the copy. A run stopped anywhere before the schema moved starts over from the old
//! trees at the next open; one stopped after it finishes the clean-up.

use std::path::{Path, PathBuf};

use super::compact::{io, remove_dir};
use super::paged::{PagedTree, Records};
use super::records::SiteRecord;
use super::{ManifestError, Result};

/// The trees that became paged, each with the paged tree that replaced it.
pub(super) fn moved(m: &super::Manifest) -> [(&'static str, &PagedTree); 5] {
    [
        ("files", &m.files),
        ("contents", &m.contents),
        ("placements", &m.placements),
        ("staged", &m.staged),
        ("archived", &m.archived),
    ]
}

/// Records copied per batch: the memory an upgrade holds.
const BATCH: usize = 10_000;

/// Where the copy of the database taken before an upgrade is kept until it is verified.
pub(super) fn backup_path(manifest: &Path) -> PathBuf {
    manifest.join("db-before-upgrade")
}

/// Rewrites the old trees of a manifest at schema `found` (< 4) into pages, verifies them,
/// and raises the schema.
pub(super) fn to_pages(m: &super::Manifest, found: u32) -> Result<()> {
    let backup = backup_path(&m.path);
    tracing::info!(
        "upgrading manifest {} from schema {found} to {} (once; a copy is kept in {} until it is verified)",
        m.path.display(),
        super::SCHEMA_VERSION,
        backup.display()
    );
    m.db.flush()?;
    // A copy from an earlier attempt may predate writes an older lomob made since: take
    // it again.
    remove_dir(&backup)?;
    copy_dir(&m.path.join("db"), &backup)?;
    for (old_name, pages) in moved(m) {
        // Pages left by an attempt that was stopped are written again from the old tree.
        pages.clear()?;
        let old = m.db.open_tree(old_name)?;
        let mut batch = Vec::with_capacity(BATCH);
        for kv in Records::all(&old) {
            let (k, v) = kv?;
            let v = convert(old_name, &k, &v)?;
            batch.push((k.to_vec(), Some(v)));
            if batch.len() == BATCH {
                pages.apply(std::mem::take(&mut batch))?;
            }
        }
        pages.apply(batch)?;
        verify(old_name, &old, pages)?;
    }
    m.meta
        .insert(super::SCHEMA_KEY, &super::SCHEMA_VERSION.to_be_bytes())?;
    // The old trees become free space sled keeps: copy the database when the command ends.
    m.meta
        .insert(super::compact::WRITTEN_KEY, &(u64::MAX / 4).to_be_bytes())?;
    super::compact::want();
    m.db.flush()?;
    finish(m)
}

/// A record as schema 4 stores it: staged records drop what their content says (see
/// `StagedRecord`'s `SiteRecord`); every other record is unchanged.
fn convert(tree: &str, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
    if tree != "staged" {
        return Ok(value.to_vec());
    }
    let bad = |reason: String| ManifestError::Corrupt {
        what: format!("staged/{}", hex::encode(key)),
        reason,
    };
    let content: super::ContentId = key
        .iter()
        .position(|&b| b == 0)
        .and_then(|nul| key[nul + 1..].try_into().ok())
        .ok_or_else(|| bad("malformed key".into()))?;
    let rec: super::StagedRecord = super::decode(value).map_err(|e| bad(e.to_string()))?;
    let stored = rec.encode_for(&content);
    // The new form must give back the very record.
    match super::StagedRecord::decode_for(&content, &stored) {
        Ok(back) if back == rec => Ok(stored),
        _ => Err(bad("its schema 4 form does not read back equal".into())),
    }
}

/// Every record of the old tree, in order, equal to the paged tree's, and nothing more.
fn verify(name: &str, old: &sled::Tree, pages: &PagedTree) -> Result<()> {
    let mismatch = |reason: String| {
        ManifestError::Corrupt {
        what: format!("{name} (upgrade to schema {})", super::SCHEMA_VERSION),
        reason: format!(
            "{reason}; the manifest was left at its old schema, unchanged: report this, and use a lomob version before schema 4 meanwhile"
        ),
    }
    };
    let mut paged = pages.iter();
    let mut n = 0u64;
    for kv in Records::all(old) {
        let (k, v) = kv?;
        let v = convert(name, &k, &v)?;
        match paged.next().transpose()? {
            Some((pk, pv)) if pk == k.as_ref() && pv == v => n += 1,
            Some(_) => return Err(mismatch(format!("record {n} differs after the rewrite"))),
            None => return Err(mismatch(format!("{n} records of more were rewritten"))),
        }
    }
    if paged.next().is_some() {
        return Err(mismatch(format!(
            "the rewrite holds more than the {n} records it was given"
        )));
    }
    Ok(())
}

/// Drops the old trees and the copy once schema 4 is recorded (also what a stopped
/// upgrade left of them).
pub(super) fn finish(m: &super::Manifest) -> Result<()> {
    let names = m.db.tree_names();
    let mut dropped = false;
    for (old_name, _) in moved(m) {
        if names.iter().any(|n| n.as_ref() == old_name.as_bytes()) {
            m.db.drop_tree(old_name)?;
            dropped = true;
        }
    }
    if dropped {
        m.db.flush()?;
    }
    remove_dir(&backup_path(&m.path))
}

/// Copies a folder of files and folders, each file made durable.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(io(&src))?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io(&src))?;
            std::fs::File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(io(&dst))?;
        }
    }
    crate::platform::file::sync_dir(to).map_err(io(to))
}

#[cfg(test)]
mod tests {
    use super::super::records::encode;
    use super::super::*;
    use super::*;

    type Records = Vec<(&'static str, Vec<(Vec<u8>, Vec<u8>)>)>;

    /// A manifest as schema 3 wrote it (every record its own value in the old trees),
    /// with the records it holds.
    fn schema_3_manifest(dir: &Path) -> Records {
        let m = Manifest::open(dir).unwrap();
        let mut b = ManifestBatch::default();
        for i in 0..700u32 {
            let c = xxhash_rust::xxh3::xxh3_128(&i.to_be_bytes()).to_be_bytes();
            b.put_content(
                &c,
                &ContentRecord {
                    size: i as u64,
                    sha256: [i as u8; 32],
                    first_seen: 1,
                },
            );
            let rel = format!("{}/folder {}/IMG_{i:04}.jpg", 2000 + i % 7, i % 13);
            b.put_file(
                1 + i % 2,
                rel.as_bytes(),
                &FileRecord::one_version(c, i as u64, 5),
            );
            if i % 3 == 0 {
                let rec = StagedRecord {
                    key: crate::keys::stage_key(&c),
                    size: i as u64,
                    etag: None,
                    at: 9,
                };
                b.put_staged("home", &c, &rec);
            }
            if i % 5 == 0 {
                b.put_archived("home", &c, &ArchivedRecord { iso: 1, at: 9 });
                let place = PlacementRecord {
                    offset: i as u64 * 2048,
                    path: rel.into_bytes(),
                };
                b.put_placement(&c, 1, &place);
            }
        }
        m.apply(b).unwrap();
        let mut records = Vec::new();
        for (old, pages) in moved(&m) {
            let all: Vec<_> = pages.iter().map(Result::unwrap).collect();
            assert!(!all.is_empty(), "{old}");
            let tree = m.db.open_tree(old).unwrap();
            for (k, v) in &all {
                let v = if old == "staged" {
                    let content: ContentId = k[k.len() - 16..].try_into().unwrap();
                    encode(&StagedRecord::decode_for(&content, v).unwrap())
                } else {
                    v.clone()
                };
                tree.insert(k.as_slice(), v).unwrap();
            }
            pages.clear().unwrap();
            records.push((old, all));
        }
        m.meta.insert(SCHEMA_KEY, &3u32.to_be_bytes()).unwrap();
        m.flush().unwrap();
        drop(m);
        // Schema 3 databases were made without compression.
        let (live, copy) = (dir.join("db"), dir.join("db.uncompressed"));
        {
            let from = sled::Config::new()
                .path(&live)
                .use_compression(true)
                .open()
                .unwrap();
            let to = sled::Config::new().path(&copy).open().unwrap();
            for name in from.tree_names() {
                let (a, b) = (from.open_tree(&name).unwrap(), to.open_tree(&name).unwrap());
                for kv in a.iter() {
                    let (k, v) = kv.unwrap();
                    b.insert(k, v).unwrap();
                }
            }
            to.flush().unwrap();
        }
        std::fs::remove_dir_all(&live).unwrap();
        std::fs::rename(&copy, &live).unwrap();
        assert_eq!(super::super::compact::compressed(&live), Some(false));
        records
    }

    fn assert_upgraded(dir: &Path, records: &Records) {
        let m = Manifest::open(dir).unwrap();
        let schema = m.meta.get(SCHEMA_KEY).unwrap().unwrap();
        assert_eq!(schema.as_ref(), &SCHEMA_VERSION.to_be_bytes());
        for ((old, pages), (name, expected)) in moved(&m).into_iter().zip(records) {
            assert_eq!(old, *name);
            let now: Vec<_> = pages.iter().map(Result::unwrap).collect();
            assert_eq!(&now, expected, "{old}");
            assert!(
                pages.pages().len() * 5 < expected.len(),
                "{old}: {} pages for {} records",
                pages.pages().len(),
                expected.len()
            );
            let names = m.db.tree_names();
            assert!(!names.iter().any(|n| n.as_ref() == old.as_bytes()), "{old}");
        }
        assert!(
            !backup_path(dir).exists(),
            "the copy is removed once verified"
        );
        let (kept, counted) = m.recount_totals().unwrap();
        assert_eq!(kept, counted);
        assert_eq!(kept.present.files, 700);
        assert_eq!(m.staged(Some("home")).unwrap().len(), 234);
        assert_eq!(m.staged_and_archived("home").unwrap().len(), 47);
        // Upgraded as it was made (the lomob that made it could still open the copy), and
        // copied into a compressed database at the next open.
        let pages: Vec<_> = m.files.iter().map(Result::unwrap).collect();
        drop(m);
        let m = Manifest::open(dir).unwrap();
        assert_eq!(
            super::super::compact::compressed(&dir.join("db")),
            Some(true),
            "copied into a compressed database"
        );
        assert_eq!(
            m.files.iter().map(Result::unwrap).collect::<Vec<_>>(),
            pages
        );
    }

    #[test]
    fn a_schema_3_manifest_is_paged_verified_and_its_copy_removed() {
        let dir = tempfile::tempdir().unwrap();
        let records = schema_3_manifest(dir.path());
        assert_upgraded(dir.path(), &records);
    }

    #[test]
    fn an_upgrade_stopped_before_the_schema_moved_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let records = schema_3_manifest(dir.path());
        {
            // Half-written pages, and a copy taken before.
            let m = Manifest::open_raw(dir.path()).unwrap();
            m.files
                .apply([(b"\0\0\0\x01zzz".to_vec(), Some(encode(&1u8)))])
                .unwrap();
            m.flush().unwrap();
            std::fs::create_dir_all(backup_path(dir.path()).join("stale")).unwrap();
        }
        assert_upgraded(dir.path(), &records);
    }

    #[test]
    fn an_upgrade_stopped_after_the_schema_moved_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let records = schema_3_manifest(dir.path());
        {
            let m = Manifest::open_raw(dir.path()).unwrap();
            for ((_, pages), (_, all)) in moved(&m).into_iter().zip(&records) {
                pages
                    .apply(all.iter().map(|(k, v)| (k.clone(), Some(v.clone()))))
                    .unwrap();
            }
            m.meta
                .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                .unwrap();
            m.flush().unwrap();
            std::fs::create_dir_all(backup_path(dir.path())).unwrap();
        }
        assert_upgraded(dir.path(), &records);
    }
}

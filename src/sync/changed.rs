//! A file the sync found changed under it: its bytes no longer have the SHA-256 the scan
//! recorded.
//!
//! Usually the file was edited, its mtime moved, and the next scan records the new version.
//! But bit rot, and editors that keep dates, change bytes while size, mtime and inode stay
//! as they were; the scan trusts the stat and would never read such a file again, so every
//! sync would fail on it forever. Here the file is read again: a real change with an
//! unchanged stat is recorded at once as a new version, flagged as possible silent
//! corruption, and backed up; the older version's copies stay (exempt from stage retention).
//! When the older bytes were never copied anywhere they are lost for good: reported once,
//! with the path and time, and counted apart instead of waiting as "not yet safe" forever.

use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use super::{FileEvent, SiteReport, WantedContent};
use crate::manifest::{
    self, ContentRecord, LostVersion, Manifest, ManifestBatch, SilentChange, Version,
};
use crate::scan::hash::hash_file;
use crate::scan::walk::{mtime_ns, WalkEntry};

/// Sites sync concurrently over one manifest; one file's change is recorded once.
static RECORDING: Mutex<()> = Mutex::new(());

/// What reading a changed file again found.
pub(super) enum Found {
    /// Its size or mtime changed too: an ordinary edit, recorded by the next scan.
    Edited,
    /// Its bytes are the recorded ones after all (a read that raced a writer).
    Unchanged,
    /// Its bytes changed without a new mtime: recorded as a new version, to back up now.
    Silent(Box<WantedContent>),
    /// Gone, or unreadable now.
    Gone,
}

/// Reads the file behind `w` again and records what it finds (see the module header).
pub(super) fn examine(
    m: &Manifest,
    w: &WantedContent,
    r: &mut SiteReport,
) -> super::error::Result<Found> {
    let _one_at_a_time = RECORDING.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut rec) = m.file(w.root, &w.rel)? else {
        return Ok(Found::Gone);
    };
    if rec.is_deleted() || !w.current {
        return Ok(Found::Gone);
    }
    let Ok(md) = std::fs::symlink_metadata(&w.source) else {
        return Ok(Found::Gone);
    };
    if !md.is_file() {
        return Ok(Found::Gone);
    }
    if md.len() != rec.size || mtime_ns(&md) != rec.mtime_ns || md.ino() != rec.inode {
        return Ok(Found::Edited);
    }
    if rec.current().content != w.content {
        // Another site's sync has just recorded it.
        return Ok(match m.content(&rec.current().content)? {
            Some(c) => Found::Silent(Box::new(new_version(w, &rec.current().content, &c))),
            None => Found::Edited,
        });
    }
    let entry = WalkEntry::from_metadata(w.rel.clone(), &md);
    let Ok(h) = hash_file(&w.source, &entry, &mut Vec::new()) else {
        return Ok(Found::Gone);
    };
    if h.xxh3 == w.content {
        return Ok(Found::Unchanged);
    }
    if h.entry.size != rec.size || h.entry.mtime_ns != rec.mtime_ns {
        return Ok(Found::Edited);
    }
    let now = manifest::now();
    let content = match m.content(&h.xxh3)? {
        Some(known) if known.sha256 != h.sha256 || known.size != h.entry.size => {
            return Err(super::SyncError::found(
                lomob_backends::ErrorKind::Integrity,
                format!(
                    "{}: xxh3 collision with a different content already recorded; not recorded, please report this",
                    w.source.display()
                ),
            ))
        }
        Some(known) => known,
        None => ContentRecord {
            size: h.entry.size,
            sha256: h.sha256,
            first_seen: now,
        },
    };
    let mut batch = ManifestBatch::default();
    batch.put_content(&h.xxh3, &content);
    rec.versions.push(Version {
        content: h.xxh3,
        size: h.entry.size,
        mtime_ns: h.entry.mtime_ns,
        recorded: now,
    });
    batch.put_file(w.root, &w.rel, &rec);
    batch.put_silent_change(
        w.root,
        &w.rel,
        &h.xxh3,
        &SilentChange {
            previous: w.content,
            found: now,
        },
    );
    let event = FileEvent {
        path: w.source.display().to_string(),
        at: now,
    };
    if !m.has_copy(&w.content)? && !present_elsewhere(m, w)? {
        batch.put_lost(
            w.root,
            &w.rel,
            &w.content,
            &LostVersion {
                size: w.size,
                found: now,
            },
        );
        tracing::error!(
            "{}: its bytes changed before any copy was made (size, mtime and inode unchanged: possible silent corruption); the version scanned earlier can never be backed up",
            event.path,
        );
        r.lost_versions.push(event.clone());
    }
    m.apply(batch)?;
    m.flush()?;
    tracing::warn!(
        "{}: bytes changed without a new mtime (possible silent corruption); backed up as a new version, the older one is kept",
        event.path
    );
    r.silent_changes.push(event);
    Ok(Found::Silent(Box::new(new_version(
        w,
        &h.xxh3,
        &ContentRecord {
            size: h.entry.size,
            sha256: h.sha256,
            first_seen: content.first_seen,
        },
    ))))
}

/// True when another present path still holds the content as its current version.
fn present_elsewhere(m: &Manifest, w: &WantedContent) -> super::error::Result<bool> {
    for kv in m.files() {
        let (root, rel, f) = kv?;
        if !f.is_deleted() && f.current().content == w.content && (root != w.root || rel != w.rel) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The wanted content of the new version at the same path.
fn new_version(w: &WantedContent, id: &[u8; 16], c: &ContentRecord) -> WantedContent {
    WantedContent {
        content: *id,
        size: c.size,
        sha256: c.sha256,
        staged: None,
        current: true,
        ..w.clone()
    }
}

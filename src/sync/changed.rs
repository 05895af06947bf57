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
    let Some(rec) = m.file(w.root, &w.rel)? else {
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
    let inode = crate::platform::file::identity(&md, || w.source.clone()).inode;
    if md.len() != rec.size || mtime_ns(&md) != rec.mtime_ns || inode != rec.inode {
        return Ok(Found::Edited);
    }
    if rec.current().content != w.content {
        // Another site's sync has just recorded it.
        return Ok(match m.content(&rec.current().content)? {
            Some(c) => Found::Silent(Box::new(new_version(w, &rec.current().content, &c))),
            None => Found::Edited,
        });
    }
    let entry = WalkEntry::from_metadata(w.rel.clone(), &md, || w.source.clone());
    let Ok(h) = hash_file(&w.source, &entry, &mut Vec::new()) else {
        return Ok(Found::Gone);
    };
    if h.xxh3 == w.content {
        return Ok(Found::Unchanged);
    }
    if h.entry.size != rec.size || h.entry.mtime_ns != rec.mtime_ns {
        return Ok(Found::Edited);
    }
    let event = FileEvent {
        path: w.source.display().to_string(),
        at: manifest::now(),
    };
    let (content, lost) = record_silent_change(m, w.root, &w.rel, rec, w.content, w.size, &h)
        .map_err(|e| match e {
            Recording::Manifest(e) => e.into(),
            Recording::Collision(msg) => super::SyncError::found(
                lomob_backends::ErrorKind::Integrity,
                format!("{}: {msg}", w.source.display()),
            ),
        })?;
    if lost {
        tracing::error!(
            "{}: its bytes changed before any copy was made (size, mtime and inode unchanged: possible silent corruption); the version scanned earlier can never be backed up",
            event.path,
        );
        r.lost_versions.push(event.clone());
    }
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

/// Why a silent change could not be recorded.
pub(crate) enum Recording {
    Manifest(crate::manifest::ManifestError),
    Collision(String),
}

impl From<crate::manifest::ManifestError> for Recording {
    fn from(e: crate::manifest::ManifestError) -> Self {
        Recording::Manifest(e)
    }
}

/// Records bytes found changed under an unchanged stat (`h`, read from the file at `root`,
/// `rel`, whose record is `rec` and whose recorded content was `previous`) as a new
/// version, flagged as a silent change; the older version stays. Returns the new content
/// and whether the older bytes are lost for good (no copy anywhere, no other path).
/// Serialised: sites sync concurrently over one manifest, and a check may run too.
pub(crate) fn record_silent_change(
    m: &Manifest,
    root: u32,
    rel: &[u8],
    mut rec: crate::manifest::FileRecord,
    previous: [u8; 16],
    previous_size: u64,
    h: &crate::scan::hash::Hashed,
) -> Result<(ContentRecord, bool), Recording> {
    let now = manifest::now();
    let content = match m.content(&h.xxh3)? {
        Some(known) if known.sha256 != h.sha256 || known.size != h.entry.size => {
            return Err(Recording::Collision(
                "xxh3 collision with a different content already recorded; not recorded, please report this".into(),
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
    batch.put_file(root, rel, &rec);
    batch.put_silent_change(
        root,
        rel,
        &h.xxh3,
        &SilentChange {
            previous,
            found: now,
        },
    );
    let lost = !m.has_copy(&previous)? && !present_elsewhere(m, root, rel, &previous)?;
    if lost {
        batch.put_lost(
            root,
            rel,
            &previous,
            &LostVersion {
                size: previous_size,
                found: now,
            },
        );
    }
    m.apply(batch)?;
    m.flush()?;
    Ok((content, lost))
}

/// True when another present path still holds `content` as its current version.
fn present_elsewhere(
    m: &Manifest,
    root: u32,
    rel: &[u8],
    content: &[u8; 16],
) -> Result<bool, crate::manifest::ManifestError> {
    for kv in m.files() {
        let (r, p, f) = kv?;
        if !f.is_deleted() && &f.current().content == content && (r != root || p != rel) {
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

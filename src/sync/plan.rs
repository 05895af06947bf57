//! What a site still needs: contents to stage, contents too big for its stage, and staged
//! contents waiting for an image. Worked out from the manifest alone, so a dry run and a
//! real run agree.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::config::SiteConfig;
use crate::manifest::{ContentId, Manifest, StagedRecord};

/// One content a site needs, with where its bytes can be read.
#[derive(Clone, Debug)]
pub struct WantedContent {
    pub content: ContentId,
    /// The file it was found at: root id and path relative to the root.
    pub root: u32,
    pub rel: Vec<u8>,
    /// The local original (which may have changed or vanished since).
    pub source: PathBuf,
    /// Path inside an image: the absolute path without its leading '/'; older versions of a
    /// path get a `~<content prefix>` suffix so two versions can share an image.
    pub image_path: Vec<u8>,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub sha256: [u8; 32],
    /// Its copy on this site's stage, if staged.
    pub staged: Option<StagedRecord>,
    /// False for an older version: the original on disk holds newer bytes.
    pub current: bool,
}

impl WantedContent {
    /// True when the local original still has the recorded size and mtime.
    pub fn unchanged_on_disk(&self) -> bool {
        self.current && super::unchanged(&self.source, self.size, self.mtime_ns)
    }
}

#[derive(Debug, Default)]
pub struct Pending {
    /// Staged copies of contents archived (and verified) on this site: to be freed.
    pub staged_archived: Vec<(ContentId, StagedRecord)>,
    pub to_stage: Vec<WantedContent>,
    /// Too big for this stage: they go straight into the next image.
    pub direct: Vec<WantedContent>,
    /// Staged copies waiting for an image: listed by [`Detail::Full`] only.
    pub staged_unarchived: Vec<WantedContent>,
    /// Bytes of the staged copies waiting for an image (listed or not).
    pub staged_waiting_bytes: u64,
    /// Staged copies past the site's `stage-retention-days`: their content has not existed
    /// locally for that long. Not archived; to be removed from the stage.
    pub expired: Vec<WantedContent>,
}

/// How much of a site's plan to work out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Everything waiting for an image, staged copies included: for a run that packs, or
    /// continues an interrupted image.
    Full,
    /// Staged copies waiting for an image are only counted, from the totals every write
    /// keeps: what a run that does not pack needs. Its memory and time then grow with what
    /// is not yet safe, not with the library, and a site with nothing unsafe reads no file
    /// record at all.
    Summary,
}

/// Whether a content still exists locally, or since when it has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    Present,
    /// Unix seconds it stopped being any present file's current content (the latest such
    /// time over all the paths that held it).
    GoneSince(i64),
}

impl Presence {
    /// Present if any path holds it now, else gone since the latest of the times.
    fn merge(self, other: Presence) -> Presence {
        match (self, other) {
            (Presence::GoneSince(a), Presence::GoneSince(b)) => Presence::GoneSince(a.max(b)),
            _ => Presence::Present,
        }
    }
}

pub fn pending(
    m: &Manifest,
    site: &str,
    config: &SiteConfig,
    detail: Detail,
) -> super::error::Result<Pending> {
    let totals = m.totals()?;
    let kept = totals.site(site);
    let mut out = Pending::default();
    if kept.staged_archived.files > 0 {
        out.staged_archived = m.staged_and_archived(site)?;
    }
    // Expiry needs every staged copy's presence, worked out over all paths.
    let retention = config.stage_retention_days.is_some();
    let detail = if retention { Detail::Full } else { detail };
    if detail == Detail::Summary {
        out.staged_waiting_bytes = kept.staged.less(kept.staged_archived).bytes;
        if totals.not_yet_safe(site).files == 0 {
            return Ok(out);
        }
    }
    let one_shot = config
        .stage
        .capabilities()
        .one_shot_limit
        .map(|l| l.bytes());
    let roots: HashMap<u32, Vec<u8>> = m.roots()?.into_iter().map(|r| (r.id, r.path)).collect();
    // Only contents this plan lists: memory grows with what waits, not with the library.
    let mut seen: HashSet<ContentId> = HashSet::new();
    let mut presence: HashMap<ContentId, Presence> = HashMap::new();
    for kv in m.files() {
        let (root, rel, f) = kv?;
        let Some(root_path) = roots.get(&root) else {
            continue;
        };
        let last = f.versions.len() - 1;
        for (i, v) in f.versions.iter().enumerate() {
            let current = i == last && !f.is_deleted();
            // Older versions matter only while a staged copy holds their bytes, and a
            // summary only counts those.
            if detail == Detail::Summary && !current {
                continue;
            }
            let staged = m.staged_record(site, &v.content)?;
            if staged.is_some() && detail == Detail::Summary {
                continue;
            }
            if retention && staged.is_some() {
                let here = if current {
                    Presence::Present
                } else if i == last {
                    Presence::GoneSince(f.deleted_at.unwrap_or(0))
                } else {
                    Presence::GoneSince(f.versions[i + 1].recorded)
                };
                presence
                    .entry(v.content)
                    .and_modify(|p| *p = p.merge(here))
                    .or_insert(here);
            }
            if (!current && staged.is_none())
                || seen.contains(&v.content)
                || m.is_archived(site, &v.content)?
            {
                continue;
            }
            seen.insert(v.content);
            let Some(content) = m.content(&v.content)? else {
                continue;
            };
            let mut abs = root_path.clone();
            if !abs.ends_with(b"/") {
                abs.push(b'/');
            }
            abs.extend_from_slice(&rel);
            let stat_mtime = if i == last { f.mtime_ns } else { v.mtime_ns };
            let mut image_path = abs.strip_prefix(b"/").unwrap_or(&abs).to_vec();
            if i != last {
                image_path
                    .extend_from_slice(format!("~{}", &hex::encode(v.content)[..8]).as_bytes());
            }
            let w = WantedContent {
                content: v.content,
                root,
                rel: rel.clone(),
                source: PathBuf::from(OsStr::from_bytes(&abs)),
                image_path,
                size: v.size,
                // The current version's bytes are the file's as last scanned: a touch that
                // changed only its date moved the record's mtime, not the version's.
                mtime: stat_mtime.div_euclid(1_000_000_000),
                mtime_ns: stat_mtime,
                mode: f.mode & 0o7777,
                sha256: content.sha256,
                staged,
                current,
            };
            if w.staged.is_some() {
                out.staged_unarchived.push(w);
            } else if one_shot.is_some_and(|l| w.size > l) {
                out.direct.push(w);
            } else {
                out.to_stage.push(w);
            }
        }
    }
    if let Some(days) = config.stage_retention_days {
        let cutoff = crate::manifest::now() - i64::from(days) * 86_400;
        // A version replaced by bytes that changed without a new mtime may be the last good
        // copy of a file hit by bit rot: never expired.
        let kept: HashSet<ContentId> = m
            .silent_changes()?
            .into_iter()
            .map(|v| v.note.previous)
            .collect();
        let expired = |c: &ContentId| {
            !kept.contains(c)
                && matches!(presence.get(c), Some(Presence::GoneSince(t)) if *t <= cutoff)
        };
        // Only staged copies expire: a content never staged is not wanted once it is gone
        // (there is nothing left to read it from).
        let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut out.staged_unarchived)
            .into_iter()
            .partition(|w| expired(&w.content));
        out.staged_unarchived = keep;
        out.expired = gone;
    }
    if detail == Detail::Full {
        out.staged_waiting_bytes = out.staged_unarchived.iter().map(|w| w.size).sum();
    }
    Ok(out)
}

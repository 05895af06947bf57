//! What a site still needs: contents to stage, contents too big for its stage, and staged
//! contents waiting for an image. Worked out from the manifest alone, so a dry run and a
//! real run agree.
//!
//! A run that packs (or continues an interrupted image) lists everything waiting
//! ([`Detail::Full`]). A run that does not needs only totals ([`Detail::Summary`], from the
//! counters every write keeps) and then reads what is not yet safe in bounded chunks
//! ([`unsafe_chunk`]), so its memory grows with a chunk, not with the library.

use std::collections::{HashMap, HashSet};
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
    /// Distinct contents of present files with no copy on the site (to stage, or too big
    /// for the stage), from the kept totals.
    pub not_yet_safe: crate::manifest::Tally,
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
    /// Only totals, from the counters every write keeps: what a run that does not pack
    /// needs to decide so. No file record is read; what is not yet safe is then read by
    /// [`unsafe_chunk`].
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
    out.not_yet_safe = totals.not_yet_safe(site);
    if detail == Detail::Summary {
        out.staged_waiting_bytes = kept.staged_unarchived().bytes;
        return Ok(out);
    }
    let one_shot = one_shot_limit(config);
    let roots = root_paths(m)?;
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
            let staged = m.staged_record(site, &v.content)?;
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
            let Some(w) = wanted(m, root_path, root, &rel, &f, i, staged)? else {
                continue;
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
    out.staged_waiting_bytes = out.staged_unarchived.iter().map(|w| w.size).sum();
    Ok(out)
}

/// The largest file the site's stage takes in one upload, if it has a limit: bigger ones go
/// straight into an image.
pub(super) fn one_shot_limit(config: &SiteConfig) -> Option<u64> {
    config
        .stage
        .capabilities()
        .one_shot_limit
        .map(|l| l.bytes())
}

/// Each root's path, by id.
fn root_paths(m: &Manifest) -> super::error::Result<HashMap<u32, Vec<u8>>> {
    Ok(m.roots()?.into_iter().map(|r| (r.id, r.path)).collect())
}

/// Version `i` of the file `rel` under `root` as a wanted content; `None` when its content
/// record is missing.
fn wanted(
    m: &Manifest,
    root_path: &[u8],
    root: u32,
    rel: &[u8],
    f: &crate::manifest::FileRecord,
    i: usize,
    staged: Option<StagedRecord>,
) -> super::error::Result<Option<WantedContent>> {
    let v = &f.versions[i];
    let last = i + 1 == f.versions.len();
    let Some(content) = m.content(&v.content)? else {
        return Ok(None);
    };
    let mut abs = root_path.to_vec();
    if !abs.ends_with(b"/") {
        abs.push(b'/');
    }
    abs.extend_from_slice(rel);
    let stat_mtime = if last { f.mtime_ns } else { v.mtime_ns };
    let mut image_path = crate::platform::names::relative_path(&abs);
    if !last {
        image_path.extend_from_slice(format!("~{}", &hex::encode(v.content)[..8]).as_bytes());
    }
    Ok(Some(WantedContent {
        content: v.content,
        root,
        rel: rel.to_vec(),
        source: crate::platform::names::path_of(&abs),
        image_path,
        size: v.size,
        // The current version's bytes are the file's as last scanned: a touch that changed
        // only its date moved the record's mtime, not the version's.
        mtime: stat_mtime.div_euclid(1_000_000_000),
        mtime_ns: stat_mtime,
        mode: f.mode & 0o7777,
        sha256: content.sha256,
        staged,
        current: last && !f.is_deleted(),
    }))
}

/// Where [`unsafe_chunk`] goes on from, and the contents it has listed (so a content held
/// by two paths is listed once, even when nothing was recorded between two chunks).
#[derive(Default)]
pub struct Cursor {
    after: Option<Vec<u8>>,
    done: bool,
    seen: HashSet<ContentId>,
    /// The contents not yet safe, when known beforehand: files are then matched against
    /// them without a lookup each, and the reading stops once all were found.
    targets: Option<HashSet<ContentId>>,
}

impl Cursor {
    /// A cursor that stages exactly `targets` (see [`Manifest::unsafe_contents`]).
    pub fn with_targets(targets: HashSet<ContentId>) -> Cursor {
        Cursor {
            targets: Some(targets),
            ..Cursor::default()
        }
    }

    /// True once the whole manifest has been read.
    pub fn done(&self) -> bool {
        self.done
    }
}

/// Contents not yet safe on a site, read in manifest order.
#[derive(Default)]
pub struct Chunk {
    pub to_stage: Vec<WantedContent>,
    /// Too big for this stage (they wait for an image): how many, and their bytes.
    pub direct: crate::manifest::Tally,
}

/// Contents to stage on `site` next: current versions of present files with no staged or
/// archived copy there, at most `max`, from where `cursor` stopped.
pub fn unsafe_chunk(
    m: &Manifest,
    site: &str,
    config: &SiteConfig,
    cursor: &mut Cursor,
    max: usize,
) -> super::error::Result<Chunk> {
    let one_shot = one_shot_limit(config);
    let roots = root_paths(m)?;
    let mut out = Chunk::default();
    let mut iter = m.files_after(cursor.after.as_deref());
    loop {
        if out.to_stage.len() >= max {
            return Ok(out);
        }
        if let Some(t) = &cursor.targets {
            if cursor.seen.len() >= t.len() {
                cursor.done = true;
                return Ok(out);
            }
        }
        let Some(kv) = iter.next() else {
            cursor.done = true;
            return Ok(out);
        };
        let (root, rel, f) = kv?;
        cursor.after = Some(crate::manifest::records::file_key(root, &rel));
        let Some(root_path) = roots.get(&root) else {
            continue;
        };
        let c = f.current().content;
        if f.is_deleted() || cursor.seen.contains(&c) {
            continue;
        }
        let safe = match &cursor.targets {
            Some(t) => !t.contains(&c),
            None => m.staged_record(site, &c)?.is_some() || m.is_archived(site, &c)?,
        };
        if safe {
            continue;
        }
        cursor.seen.insert(c);
        let Some(w) = wanted(m, root_path, root, &rel, &f, f.versions.len() - 1, None)? else {
            continue;
        };
        if one_shot.is_some_and(|l| w.size > l) {
            out.direct.files += 1;
            out.direct.bytes += w.size;
        } else {
            out.to_stage.push(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ArchivedRecord, ContentRecord, FileRecord, ManifestBatch, StagedRecord};

    fn file(content: u8, deleted: bool) -> FileRecord {
        FileRecord {
            deleted_at: deleted.then_some(2),
            ..FileRecord::one_version([content; 16], 10, 1)
        }
    }

    /// Chunks of two across a manifest with shared, staged, archived and deleted contents:
    /// each unsafe content comes exactly once, in manifest order, and the cursor ends, even
    /// though nothing is recorded between chunks (a dry run); the summary counts the same.
    #[test]
    fn unsafe_chunks_list_each_unsafe_content_once() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::open(dir.path()).unwrap();
        let root = m.ensure_root(b"/lib", 1).unwrap().id;
        let mut b = ManifestBatch::default();
        for c in 1..=9u8 {
            b.put_content(
                &[c; 16],
                &ContentRecord {
                    size: 10,
                    sha256: [c; 32],
                    first_seen: 1,
                },
            );
        }
        // f1..f9 hold contents 1..9; g1..g3 hold 1..3 again; f4 is deleted; 5 is staged on
        // the site, 6 archived there, 7 staged on another site only.
        for c in 1..=9u8 {
            b.put_file(root, format!("f{c}").as_bytes(), &file(c, c == 4));
        }
        for c in 1..=3u8 {
            b.put_file(root, format!("g{c}").as_bytes(), &file(c, false));
        }
        let staged = |key: &str| StagedRecord {
            key: key.into(),
            size: 10,
            etag: None,
            at: 1,
        };
        b.put_staged("s", &[5; 16], &staged("stage/5"));
        b.put_archived("s", &[6; 16], &ArchivedRecord { iso: 1, at: 1 });
        b.put_staged("other", &[7; 16], &staged("stage/7"));
        m.apply(b).unwrap();

        let config = crate::config::parse_str(
            "[sites.s]\nstage = { kind = \"fs\", root = \"/tmp/s\" }\narchive = { kind = \"fs\", root = \"/tmp/a\" }\n",
        )
        .unwrap()
        .sites
        .remove("s")
        .unwrap();
        let read_all = |mut cursor: Cursor| {
            let mut listed = Vec::new();
            let mut chunks = 0;
            while !cursor.done() {
                let chunk = unsafe_chunk(&m, "s", &config, &mut cursor, 2).unwrap();
                assert!(chunk.to_stage.len() <= 2);
                listed.extend(chunk.to_stage.iter().map(|w| w.content[0]));
                chunks += 1;
                assert!(chunks < 20, "the cursor never ends");
            }
            listed
        };
        let listed = read_all(Cursor::default());
        assert_eq!(listed, vec![1, 2, 3, 7, 8, 9]);
        // Found by content first: the same contents, in the same order.
        let targets = m.unsafe_contents("s", 100).unwrap().unwrap();
        assert_eq!(targets.len(), 6);
        assert_eq!(read_all(Cursor::with_targets(targets)), listed);
        assert!(
            m.unsafe_contents("s", 5).unwrap().is_none(),
            "over the limit"
        );
        let summary = pending(&m, "s", &config, Detail::Summary).unwrap();
        assert_eq!(summary.not_yet_safe.files, 6);
        assert_eq!(summary.staged_waiting_bytes, 10);
        let full = pending(&m, "s", &config, Detail::Full).unwrap();
        let mut full_unsafe: Vec<u8> = full.to_stage.iter().map(|w| w.content[0]).collect();
        full_unsafe.sort();
        assert_eq!(full_unsafe, listed);
        assert_eq!(full.staged_waiting_bytes, summary.staged_waiting_bytes);
    }
}

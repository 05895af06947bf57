//! The totals `status` shows, kept as counters that every write maintains in the same sled
//! transaction as the records it changes, so `status` reads one key instead of every record
//! of a million-file library. [`recount`] recomputes them from the records: at the first open
//! of an older manifest, and for `status --recount`, which reports any drift.
//!
//! "Not yet safe on a site" (distinct contents of present files with no copy there) cannot be
//! kept by adding and subtracting alone. Each content record therefore ends with how many
//! present files have it as their current version (a varint after the postcard record, which
//! readers of the record ignore): the site totals then change only when that count crosses
//! zero, or when a copy on a site comes or goes. Kept in the record rather than a tree of its
//! own, it costs no extra write when a scan records a new file with its new content.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::records::{
    decode, encode, site_key, ContentId, ContentRecord, FileRecord, SiteRecord, StagedRecord,
};
use super::{corrupt, Manifest, Result};

/// A number of files (or contents, or versions) and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, n: u64, bytes: u64) {
        self.files += n;
        self.bytes += bytes;
    }

    /// Saturating: a counter never wraps; `status --recount` finds and repairs any drift.
    fn sub(&mut self, n: u64, bytes: u64) {
        self.files = self.files.saturating_sub(n);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// `self` less `other`, never below zero.
    pub fn less(self, other: Tally) -> Tally {
        Tally {
            files: self.files.saturating_sub(other.files),
            bytes: self.bytes.saturating_sub(other.bytes),
        }
    }
}

/// The library's totals. Stored postcard-encoded under `meta/totals`: fields are appended
/// only together with a schema bump.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Paths that exist, with their current sizes.
    pub present: Tally,
    /// Paths deleted locally (kept: their versions stay restorable).
    pub deleted: Tally,
    /// Every version of every path.
    pub versions: Tally,
    /// Distinct contents.
    pub contents: Tally,
    /// Distinct contents that are the current version of a present path.
    pub live: Tally,
    /// Per site name, as recorded in the staged and archived trees.
    pub sites: BTreeMap<String, SiteTotals>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteTotals {
    /// Staged copies, archived or not, by their recorded sizes.
    pub staged: Tally,
    /// Contents archived here, by content size.
    pub archived: Tally,
    /// Staged copies of contents also archived here: waiting to be freed.
    pub staged_archived: Tally,
    /// Live contents with a staged or archived copy here.
    pub live_safe: Tally,
}

impl SiteTotals {
    /// Staged copies not archived here: waiting for an image.
    pub fn staged_unarchived(&self) -> Tally {
        self.staged.less(self.staged_archived)
    }
}

impl Totals {
    /// The totals of `site` (all zero for a site that never stored anything).
    pub fn site(&self, site: &str) -> SiteTotals {
        self.sites.get(site).cloned().unwrap_or_default()
    }

    /// Distinct contents of present files with no copy on `site`.
    pub fn not_yet_safe(&self, site: &str) -> Tally {
        self.live.less(self.site(site).live_safe)
    }

    /// Each counter that differs from `truth`, as "name: stored → true" lines.
    pub fn drift(&self, truth: &Totals) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: String, a: Tally, b: Tally| {
            if a != b {
                out.push(format!(
                    "{name}: {} files, {} bytes recorded; {} files, {} bytes counted",
                    a.files, a.bytes, b.files, b.bytes
                ));
            }
        };
        cmp("present".into(), self.present, truth.present);
        cmp("deleted".into(), self.deleted, truth.deleted);
        cmp("versions".into(), self.versions, truth.versions);
        cmp("contents".into(), self.contents, truth.contents);
        cmp("live contents".into(), self.live, truth.live);
        let names: std::collections::BTreeSet<&String> =
            self.sites.keys().chain(truth.sites.keys()).collect();
        for name in names {
            let (a, b) = (self.site(name), truth.site(name));
            cmp(format!("{name}: staged"), a.staged, b.staged);
            cmp(format!("{name}: archived"), a.archived, b.archived);
            cmp(
                format!("{name}: staged and archived"),
                a.staged_archived,
                b.staged_archived,
            );
            cmp(format!("{name}: safe"), a.live_safe, b.live_safe);
        }
        out
    }
}

/// What a file record adds to the totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileShare {
    present: bool,
    size: u64,
    versions: u64,
    version_bytes: u64,
    /// The current content.
    current: ContentId,
}

impl FileShare {
    pub(super) fn of(f: &FileRecord) -> FileShare {
        let v = f.current();
        FileShare {
            present: !f.is_deleted(),
            size: f.size,
            versions: f.versions.len() as u64,
            version_bytes: f.versions.iter().map(|v| v.size).sum(),
            current: v.content,
        }
    }
}

/// Per content: how many present files hold it as their current version.
pub(super) type LiveCounts = HashMap<ContentId, u32>;

/// A content record as stored: the postcard record, then the live count as a varint.
pub(super) fn encode_content(record: &[u8], live: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(record.len() + 5);
    v.extend_from_slice(record);
    v.extend_from_slice(&encode(&live));
    v
}

/// A stored content record: the record, its length, and its live count (`None` when
/// written before schema 3, whose records end with the record).
pub(super) fn decode_content(
    c: &ContentId,
    bytes: &[u8],
) -> Result<(ContentRecord, usize, Option<u32>)> {
    let bad = |e: postcard::Error| corrupt(format!("contents/{}", hex::encode(c)), e);
    let (rec, rest): (ContentRecord, &[u8]) = postcard::take_from_bytes(bytes).map_err(bad)?;
    let record_len = bytes.len() - rest.len();
    let live = if rest.is_empty() {
        None
    } else {
        Some(decode::<u32>(rest).map_err(bad)?)
    };
    Ok((rec, record_len, live))
}

/// A content as this batch leaves it.
#[derive(Clone)]
struct ContentState {
    /// The postcard record, without the live count.
    record: Vec<u8>,
    size: u64,
    live: u32,
    /// Written by this batch (a new record, or a new live count).
    changed: bool,
}

/// The totals' change for one batch, worked out against the records before it: each lookup
/// sees the batch's earlier writes first. Only one batch is worked out at a time (the
/// manifest's writer lock), so the records read are the ones the batch replaces.
pub(super) struct Delta<'a> {
    m: &'a Manifest,
    pub totals: Totals,
    /// The latest share written per key in this batch (`None`: removed).
    files: HashMap<Vec<u8>, Option<FileShare>>,
    /// Contents read or written by this batch; `None` for an id with no record.
    contents: HashMap<ContentId, Option<ContentState>>,
    staged: HashMap<Vec<u8>, Option<u64>>,
    archived: HashMap<Vec<u8>, bool>,
}

impl<'a> Delta<'a> {
    pub(super) fn new(m: &'a Manifest, totals: Totals) -> Self {
        Delta {
            m,
            totals,
            files: HashMap::new(),
            contents: HashMap::new(),
            staged: HashMap::new(),
            archived: HashMap::new(),
        }
    }

    /// The content as this batch has it so far (read once from the tree).
    fn content(&mut self, c: &ContentId) -> Result<Option<&mut ContentState>> {
        if !self.contents.contains_key(c) {
            let state = match self.m.contents.get(c)? {
                None => None,
                Some(v) => {
                    let (rec, len, live) = decode_content(c, &v)?;
                    Some(ContentState {
                        record: v[..len].to_vec(),
                        size: rec.size,
                        live: live.unwrap_or(0),
                        changed: false,
                    })
                }
            };
            self.contents.insert(*c, state);
        }
        Ok(self.contents.get_mut(c).and_then(Option::as_mut))
    }

    fn content_size(&mut self, c: &ContentId) -> Result<Option<u64>> {
        Ok(self.content(c)?.map(|s| s.size))
    }

    /// A content record written by the batch (`record`, postcard-encoded): it keeps the live
    /// count it had.
    pub(super) fn put_content(&mut self, c: &ContentId, record: &[u8], size: u64) -> Result<()> {
        if let Some(state) = self.content(c)? {
            state.record = record.to_vec();
            state.size = size;
            state.changed = true;
            return Ok(());
        }
        self.contents.insert(
            *c,
            Some(ContentState {
                record: record.to_vec(),
                size,
                live: 0,
                changed: true,
            }),
        );
        {
            self.totals.contents.add(1, size);
            // Archived bytes are content sizes: an archived record that came first (an
            // import in any order) gets its size now.
            let sites: Vec<String> = self.totals.sites.keys().cloned().collect();
            for s in sites {
                if self.is_archived(&site_key(&s, c))? {
                    self.totals.sites.entry(s).or_default().archived.bytes += size;
                }
            }
        }
        Ok(())
    }

    fn staged_size(&self, key: &[u8]) -> Result<Option<u64>> {
        if let Some(s) = self.staged.get(key) {
            return Ok(*s);
        }
        match self.m.staged.get(key)? {
            None => Ok(None),
            Some(v) => {
                let content = key
                    .get(key.len().saturating_sub(16)..)
                    .and_then(|c| ContentId::try_from(c).ok())
                    .ok_or_else(|| corrupt("staged", "malformed key"))?;
                let rec =
                    StagedRecord::decode_for(&content, &v).map_err(|e| corrupt("staged", e))?;
                Ok(Some(rec.size))
            }
        }
    }

    fn is_archived(&self, key: &[u8]) -> Result<bool> {
        if let Some(a) = self.archived.get(key) {
            return Ok(*a);
        }
        self.m.archived.contains_key(key)
    }

    fn has_copy(&self, site: &str, c: &ContentId) -> Result<bool> {
        let key = site_key(site, c);
        Ok(self.staged_size(&key)?.is_some() || self.is_archived(&key)?)
    }

    /// One more (or one fewer) present file holds `c` as its current version. A file whose
    /// content has no record counts nowhere (as in [`recount`]).
    fn live_step(&mut self, c: &ContentId, up: bool) -> Result<()> {
        let Some(state) = self.content(c)? else {
            return Ok(());
        };
        let count = state.live;
        let after = if up {
            count.saturating_add(1)
        } else {
            count.saturating_sub(1)
        };
        state.live = after;
        state.changed = true;
        let size = state.size;
        if (count == 0) == (after == 0) {
            return Ok(());
        }
        let sites: Vec<String> = self.totals.sites.keys().cloned().collect();
        let mut safe = Vec::new();
        for s in sites {
            if self.has_copy(&s, c)? {
                safe.push(s);
            }
        }
        let step = |t: &mut Tally| {
            if up {
                t.add(1, size)
            } else {
                t.sub(1, size)
            }
        };
        step(&mut self.totals.live);
        for s in safe {
            step(&mut self.totals.sites.entry(s).or_default().live_safe);
        }
        Ok(())
    }

    /// A file record written at `key`, or (`None`) removed.
    pub(super) fn put_file(&mut self, key: &[u8], new: Option<FileShare>) -> Result<()> {
        let old = match self.files.get(key) {
            Some(s) => *s,
            None => match self.m.files.get(key)? {
                None => None,
                Some(v) => {
                    let f: FileRecord = decode(&v).map_err(|e| corrupt("files", e))?;
                    Some(FileShare::of(&f))
                }
            },
        };
        if let Some(o) = old {
            if o.present {
                self.totals.present.sub(1, o.size);
                self.live_step(&o.current, false)?;
            } else {
                self.totals.deleted.sub(1, o.size);
            }
            self.totals.versions.sub(o.versions, o.version_bytes);
        }
        if let Some(new) = new {
            if new.present {
                self.totals.present.add(1, new.size);
                self.live_step(&new.current, true)?;
            } else {
                self.totals.deleted.add(1, new.size);
            }
            self.totals.versions.add(new.versions, new.version_bytes);
        }
        self.files.insert(key.to_vec(), new);
        Ok(())
    }

    /// A content's copies on `site` changed from `before` to `after` (any copy at all).
    fn copy_step(&mut self, site: &str, c: &ContentId, before: bool, after: bool) -> Result<()> {
        if before == after {
            return Ok(());
        }
        let Some(state) = self.content(c)? else {
            return Ok(());
        };
        if state.live == 0 {
            return Ok(());
        }
        let size = state.size;
        let t = &mut self
            .totals
            .sites
            .entry(site.to_string())
            .or_default()
            .live_safe;
        if after {
            t.add(1, size)
        } else {
            t.sub(1, size)
        }
        Ok(())
    }

    /// The staged copy of `c` on `site` is now `new` (its size), or gone.
    pub(super) fn set_staged(&mut self, site: &str, c: &ContentId, new: Option<u64>) -> Result<()> {
        let key = site_key(site, c);
        let old = self.staged_size(&key)?;
        let archived = self.is_archived(&key)?;
        let st = self.totals.sites.entry(site.to_string()).or_default();
        if let Some(o) = old {
            st.staged.sub(1, o);
            if archived {
                st.staged_archived.sub(1, o);
            }
        }
        if let Some(n) = new {
            st.staged.add(1, n);
            if archived {
                st.staged_archived.add(1, n);
            }
        }
        self.staged.insert(key, new);
        self.copy_step(
            site,
            c,
            old.is_some() || archived,
            new.is_some() || archived,
        )
    }

    /// `c` is now archived on `site`, or no longer.
    pub(super) fn set_archived(&mut self, site: &str, c: &ContentId, new: bool) -> Result<()> {
        let key = site_key(site, c);
        let old = self.is_archived(&key)?;
        let staged = self.staged_size(&key)?;
        let size = self.content_size(c)?.unwrap_or(0);
        let st = self.totals.sites.entry(site.to_string()).or_default();
        if old != new {
            if new {
                st.archived.add(1, size);
            } else {
                st.archived.sub(1, size);
            }
            if let Some(s) = staged {
                if new {
                    st.staged_archived.add(1, s);
                } else {
                    st.staged_archived.sub(1, s);
                }
            }
        }
        self.archived.insert(key, new);
        self.copy_step(site, c, old || staged.is_some(), new || staged.is_some())
    }

    /// The contents tree's writes for this batch: records written, and live counts changed.
    pub(super) fn content_writes(&self) -> Vec<super::paged::Write> {
        let mut out = Vec::new();
        for (c, state) in &self.contents {
            if let Some(s) = state.as_ref().filter(|s| s.changed) {
                out.push((c.to_vec(), Some(encode_content(&s.record, s.live))));
            }
        }
        out
    }
}

/// The totals and every content's live count, worked out from the records alone (the live
/// counts stored in the content records are not read).
pub(super) fn recount(m: &Manifest) -> Result<(Totals, LiveCounts)> {
    let mut t = Totals::default();
    let mut live = LiveCounts::new();
    for kv in m.files.iter() {
        let (_, v) = kv?;
        let f: FileRecord = decode(&v).map_err(|e| corrupt("files", e))?;
        let s = FileShare::of(&f);
        if s.present {
            t.present.add(1, s.size);
            *live.entry(s.current).or_insert(0) += 1;
        } else {
            t.deleted.add(1, s.size);
        }
        t.versions.add(s.versions, s.version_bytes);
    }
    // Contents with no record count nowhere; the others give live its bytes.
    let mut sizes: HashMap<ContentId, u64> = HashMap::new();
    for kv in m.contents.iter() {
        let (k, v) = kv?;
        let id = content_key(&k)?;
        let (rec, _, _) = decode_content(&id, &v)?;
        t.contents.add(1, rec.size);
        if live.contains_key(&id) {
            t.live.add(1, rec.size);
        }
        sizes.insert(id, rec.size);
    }
    live.retain(|c, _| sizes.contains_key(c));
    let archived = m.archived(None)?;
    for (site, c, _) in &archived {
        let st = t.sites.entry(site.clone()).or_default();
        st.archived.add(1, sizes.get(c).copied().unwrap_or(0));
    }
    let mut copies: std::collections::HashSet<(String, ContentId)> =
        archived.into_iter().map(|(s, c, _)| (s, c)).collect();
    let archived_only = copies.clone();
    for (site, c, r) in m.staged(None)? {
        let st = t.sites.entry(site.clone()).or_default();
        st.staged.add(1, r.size);
        let pair = (site, c);
        if archived_only.contains(&pair) {
            st.staged_archived.add(1, r.size);
        }
        copies.insert(pair);
    }
    for (site, c) in copies {
        if live.contains_key(&c) {
            let size = sizes.get(&c).copied().unwrap_or(0);
            t.sites.entry(site).or_default().live_safe.add(1, size);
        }
    }
    Ok((t, live))
}

fn content_key(k: &[u8]) -> Result<ContentId> {
    k.try_into()
        .map_err(|_| corrupt("contents", "key is not 16 bytes"))
}

pub(super) const TOTALS_KEY: &[u8] = b"totals";

pub(super) fn encode_totals(t: &Totals) -> Vec<u8> {
    encode(t)
}

pub(super) fn decode_totals(bytes: &[u8]) -> Result<Totals> {
    decode(bytes).map_err(|e| corrupt("meta/totals", e))
}

/// Replaces the stored totals and live counts with a recount; returns it. The totals key
/// goes first and comes back last: a run killed in between leaves none, and the next open
/// recounts. Only content records whose live count is wrong (or missing, before schema 3)
/// are written.
pub(super) fn store_recount(m: &Manifest) -> Result<Totals> {
    let (t, live) = recount(m)?;
    m.meta.remove(TOTALS_KEY)?;
    // Applied in batches as the records are read: a page split by a batch may be read
    // again, but its records then already hold their counts and are not written twice.
    let mut b = Vec::new();
    for kv in m.contents.iter() {
        let (k, v) = kv?;
        let id = content_key(&k)?;
        let (_, len, stored) = decode_content(&id, &v)?;
        let count = live.get(&id).copied().unwrap_or(0);
        if stored != Some(count) {
            b.push((k, Some(encode_content(&v[..len], count))));
            if b.len() >= 8192 {
                m.contents.apply(std::mem::take(&mut b))?;
            }
        }
    }
    m.contents.apply(b)?;
    m.meta.insert(TOTALS_KEY, encode_totals(&t))?;
    m.db.flush()?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_never_wrap() {
        let mut t = Tally::default();
        t.sub(1, 10);
        assert_eq!(t, Tally::default());
        t.add(2, 20);
        assert_eq!(
            t.less(Tally { files: 3, bytes: 5 }),
            Tally {
                files: 0,
                bytes: 15
            }
        );
    }

    /// A small deterministic generator, so a failure replays.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn content(n: u64) -> ContentId {
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&n.to_be_bytes());
        c
    }

    /// Random batches of every kind of counted write, several touching one key in the same
    /// batch, across two sites: after each, the maintained totals equal a recount, and so
    /// do they after the manifest is closed and opened again.
    #[test]
    fn maintained_totals_equal_a_recount_after_random_batches() {
        use crate::manifest::{ArchivedRecord, ManifestBatch, Version};
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Lcg(20261201);
        let size_of = |c: u64| 100 + c * 7;
        for round in 0..2 {
            let m = Manifest::open(dir.path()).unwrap();
            for _ in 0..60 {
                let mut b = ManifestBatch::default();
                for _ in 0..rng.below(12) + 1 {
                    let c = rng.below(20);
                    let site = ["a", "b"][rng.below(2) as usize];
                    match rng.below(6) {
                        0 | 1 => {
                            // Contents first, as every writer does.
                            b.put_content(
                                &content(c),
                                &ContentRecord {
                                    size: size_of(c),
                                    sha256: [0; 32],
                                    first_seen: 1,
                                },
                            );
                            let old = rng.below(20);
                            let mut versions = vec![];
                            if rng.below(2) == 0 {
                                versions.push(Version {
                                    content: content(old),
                                    size: size_of(old),
                                    mtime_ns: 1,
                                    recorded: 1,
                                });
                            }
                            versions.push(Version {
                                content: content(c),
                                size: size_of(c),
                                mtime_ns: 2,
                                recorded: 2,
                            });
                            let rel = format!("f{}", rng.below(15));
                            let rec = FileRecord {
                                size: size_of(c),
                                mtime_ns: 2,
                                inode: 1,
                                device: 1,
                                mode: 0o644,
                                first_seen: 1,
                                deleted_at: (rng.below(4) == 0).then_some(3),
                                versions,
                            };
                            // Sometimes a record moves (a case-only rename): from a
                            // path that may or may not have one, to one in another case.
                            if rng.below(4) == 0 {
                                let to = rel.to_uppercase();
                                b.move_file(1, rel.as_bytes(), to.as_bytes(), &rec);
                            } else {
                                b.put_file(1, rel.as_bytes(), &rec);
                            }
                        }
                        2 => b.put_staged(
                            site,
                            &content(c),
                            &StagedRecord {
                                key: format!("stage/{c}"),
                                size: size_of(c),
                                etag: None,
                                at: 1,
                            },
                        ),
                        3 => b.remove_staged(site, &content(c)),
                        4 => b.put_archived(site, &content(c), &ArchivedRecord { iso: 1, at: 1 }),
                        _ => b.remove_archived(site, &content(c)),
                    }
                }
                m.apply(b).unwrap();
                let (truth, _) = recount(&m).unwrap();
                let kept = m.totals().unwrap();
                assert_eq!(kept.drift(&truth), Vec::<String>::new(), "round {round}");
            }
            let (before, after) = m.recount_totals().unwrap();
            assert_eq!(before, after);
        }
    }

    /// A schema 2 manifest: no totals, and content records without a live count. Its first
    /// open counts both, and later writes keep them.
    #[test]
    fn a_manifest_from_before_the_totals_is_counted_at_open() {
        use crate::manifest::ManifestBatch;
        let dir = tempfile::tempdir().unwrap();
        let record = ContentRecord {
            size: 9,
            sha256: [0; 32],
            first_seen: 1,
        };
        let mut f = FileRecord::one_version(content(1), 9, 1);
        {
            let m = Manifest::open(dir.path()).unwrap();
            let mut b = ManifestBatch::default();
            b.put_content(&content(1), &record);
            b.put_file(1, b"a.jpg", &f);
            m.apply(b).unwrap();
            // As schema 2 wrote them.
            m.contents
                .apply([(content(1).to_vec(), Some(encode(&record)))])
                .unwrap();
            m.meta.remove(TOTALS_KEY).unwrap();
            m.flush().unwrap();
        }
        let m = Manifest::open(dir.path()).unwrap();
        let t = m.totals().unwrap();
        assert_eq!(t.contents, Tally { files: 1, bytes: 9 });
        assert_eq!(t.live, Tally { files: 1, bytes: 9 });
        let stored = m.contents.get(&content(1)).unwrap().unwrap();
        assert_eq!(decode_content(&content(1), &stored).unwrap().2, Some(1));
        f.deleted_at = Some(2);
        let mut b = ManifestBatch::default();
        b.put_file(1, b"a.jpg", &f);
        m.apply(b).unwrap();
        assert_eq!(m.totals().unwrap().live, Tally::default());
        let (kept, counted) = m.recount_totals().unwrap();
        assert_eq!(kept, counted);
    }

    #[test]
    fn content_records_carry_their_live_count_and_read_as_plain_records() {
        let rec = ContentRecord {
            size: 1 << 40,
            sha256: [7; 32],
            first_seen: 3,
        };
        let plain = encode(&rec);
        let stored = encode_content(&plain, 70_000);
        let c = [1; 16];
        assert_eq!(
            decode_content(&c, &stored).unwrap(),
            (rec.clone(), plain.len(), Some(70_000))
        );
        // Readers of the record alone ignore the count; a record from before has none.
        assert_eq!(decode::<ContentRecord>(&stored).unwrap(), rec);
        assert_eq!(decode_content(&c, &plain).unwrap().2, None);
        assert!(decode_content(&c, &stored[..5]).is_err());
    }
}

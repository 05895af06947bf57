//! The manifest: every file, its versions and hashes, and (later) where each copy lives on
//! each site. It is a sled database owned entirely by this module: no sled type leaves it.
//!
//! Trees: `meta` (schema version, counters), `roots`, `files` (keyed by root id + relative
//! path), `contents` (keyed by xxh3-128, so identical bytes at two paths are one content),
//! `runs`. Writes are batched by the caller through [`ManifestBatch`]; [`Manifest::flush`]
//! makes them durable, which commands do at checkpoints and at the end.
//!
//! The portable export ([`export`]) is the durable truth that is copied to every site; the
//! sled files are a local cache of it that can be rebuilt by `lomob manifest import`.

mod compact;
mod counts;
mod error;
pub mod export;
mod lock;
mod paged;
pub mod records;
mod upgrade;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use compact::wanted as compaction_wanted;
pub use counts::{SiteTotals, Tally, Totals};
pub use error::ManifestError;
pub use records::{
    AlertState, ArchivedRecord, CheckRecord, ContentId, ContentRecord, FileRecord, FileStat,
    ImageObject, IsoRecord, IsoStatus, IsoUpload, LostVersion, MountPoint, PendingImage,
    PendingMember, PlacementRecord, RootDevices, RootRecord, RunRecord, SilentChange, StagedRecord,
    StoredImage, ThawRecord, UnverifiedObject, Version,
};

use lock::DbLock;
use paged::PagedTree;
use records::{
    decode, decode_stat, encode, file_key, placement_key, site_key, site_name_key, split_file_key,
    split_version_key, version_key, SiteRecord,
};

/// The schema this build writes. A newer one on disk is refused; older ones are migrated.
/// Version 2 added trees only (pending images, unverified objects, silent changes, lost
/// versions, root devices) and the manifest id, so a version 1 database is simply raised.
/// Version 3 added the totals every write maintains (`meta/totals`, and each content
/// record's live count),
/// counted from the records at the first open: an older lomob writing without them would
/// leave them wrong, so it must not open a version 3 manifest.
/// Version 4 keeps files, contents, placements and staged and archived copies in pages
/// ([`paged`]): the records are unchanged, a version 3 manifest is rewritten at its first
/// open ([`upgrade`]).
pub const SCHEMA_VERSION: u32 = 4;

/// Largest page of file records (~40 files). sled splits a node past 16 records, so this
/// sets the size of the nodes it keeps decoded: 16 KiB pages made a million-file scan's
/// nodes four times larger for a 4% smaller database.
const FILE_PAGE: usize = 4 << 10;
/// Largest page of the trees keyed by content id: writes land at random keys, so pages are
/// small enough that rewriting one for a single record costs little.
const CONTENT_PAGE: usize = 2 << 10;

const SCHEMA_KEY: &[u8] = b"schema";
const NEXT_ROOT_KEY: &[u8] = b"next-root";
const NEXT_RUN_KEY: &[u8] = b"next-run";
const NEXT_ISO_KEY: &[u8] = b"next-iso";
const MANIFEST_ID_KEY: &[u8] = b"manifest-id";
const NEXT_SNAPSHOT_KEY: &[u8] = b"next-snapshot";
/// Moved on by every write to a record a snapshot holds (not the run history): a snapshot
/// taken at the same generation describes the manifest as it is.
const GENERATION_KEY: &[u8] = b"generation";
/// Present while an import writes its batches: such a manifest is only half a library.
const IMPORT_UNFINISHED_KEY: &[u8] = b"import-unfinished";

pub type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// An open manifest, exclusively held by this process.
pub struct Manifest {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    roots: sled::Tree,
    files: PagedTree,
    contents: PagedTree,
    runs: sled::Tree,
    isos: sled::Tree,
    placements: PagedTree,
    uploads: sled::Tree,
    staged: PagedTree,
    archived: PagedTree,
    pending: sled::Tree,
    unverified: sled::Tree,
    silent: sled::Tree,
    lost: sled::Tree,
    devices: sled::Tree,
    thaws: sled::Tree,
    image_objects: sled::Tree,
    checks: sled::Tree,
    alerts: sled::Tree,
    /// Folders seen by the last scan and their modification times (listings only).
    dirs: sled::Tree,
    /// How each encrypted image upload was sealed (salt and header, neither secret), so an
    /// interrupted upload continues with the same ciphertext. Key: site, NUL, object key.
    seals: sled::Tree,
    /// Held while a batch is worked out and applied, so the totals' changes are computed
    /// against the records they replace even when several tasks write.
    writer: std::sync::Mutex<()>,
    _lock: DbLock,
}

/// One entry of a folder's records, as [`Manifest::for_each_in_folder`] reads them.
#[derive(Debug)]
pub enum FolderItem<'a> {
    /// A file directly in the folder: its path relative to the root, and its stat fields.
    File(&'a [u8], FileStat),
    /// The name of a subfolder holding records (its files are not read).
    Subfolder(&'a [u8]),
}

/// Something lomob learned about a site and keeps for later runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteFlag {
    /// The archive's single-PUT ETags are not MD5s (an SSE-KMS bucket): images go up as
    /// parts, each checked by the server against its Content-MD5.
    MultipartOnly,
}

impl SiteFlag {
    fn key(self, site: &str) -> Vec<u8> {
        let name = match self {
            SiteFlag::MultipartOnly => "multipart-only",
        };
        format!("site-flag/{site}/{name}").into_bytes()
    }
}

/// Something recorded about one version of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionNote<T> {
    pub root: u32,
    pub rel: Vec<u8>,
    pub content: ContentId,
    pub note: T,
}

/// Writes collected by a command and applied together.
/// A staged record, encoded, with its size (a removal has none).
type EncodedStaged = (Vec<u8>, u64);
/// A file record, encoded, with what it adds to the totals.
type EncodedFile = (Vec<u8>, counts::FileShare);

/// Writes that change the totals are kept in order with what they add, so [`Manifest::apply`]
/// can count them against the records they replace.
#[derive(Default)]
pub struct ManifestBatch {
    /// A file record written, or (`None`) removed.
    files: Vec<(Vec<u8>, Option<EncodedFile>)>,
    contents: Vec<(ContentId, Vec<u8>, u64)>,
    placements: Vec<paged::Write>,
    staged: Vec<(String, ContentId, Option<EncodedStaged>)>,
    archived: Vec<(String, ContentId, Option<Vec<u8>>)>,
    silent: sled::Batch,
    lost: sled::Batch,
    len: usize,
}

impl ManifestBatch {
    pub fn put_file(&mut self, root: u32, rel: &[u8], rec: &FileRecord) {
        self.files.push((
            file_key(root, rel),
            Some((encode(rec), counts::FileShare::of(rec))),
        ));
        self.len += 1;
    }

    /// Removes a path's record. Only for a record that moves to another key in the same
    /// batch (a case-only rename on a case-insensitive file system): lomob never forgets a
    /// file otherwise.
    pub fn move_file(&mut self, root: u32, from: &[u8], to: &[u8], rec: &FileRecord) {
        self.files.push((file_key(root, from), None));
        self.put_file(root, to, rec);
    }

    pub fn put_content(&mut self, id: &ContentId, rec: &ContentRecord) {
        self.contents.push((*id, encode(rec), rec.size));
        self.len += 1;
    }

    pub fn put_placement(&mut self, content: &ContentId, iso: u32, rec: &PlacementRecord) {
        self.placements
            .push((placement_key(content, iso), Some(encode(rec))));
        self.len += 1;
    }

    pub fn put_staged(&mut self, site: &str, content: &ContentId, rec: &StagedRecord) {
        self.staged.push((
            site.to_string(),
            *content,
            Some((rec.encode_for(content), rec.size)),
        ));
        self.len += 1;
    }

    pub fn remove_staged(&mut self, site: &str, content: &ContentId) {
        self.staged.push((site.to_string(), *content, None));
        self.len += 1;
    }

    pub fn put_archived(&mut self, site: &str, content: &ContentId, rec: &ArchivedRecord) {
        self.archived
            .push((site.to_string(), *content, Some(rec.encode_for(content))));
        self.len += 1;
    }

    /// The content is no longer counted as archived on `site` (its image failed a check).
    pub fn remove_archived(&mut self, site: &str, content: &ContentId) {
        self.archived.push((site.to_string(), *content, None));
        self.len += 1;
    }

    pub fn put_silent_change(
        &mut self,
        root: u32,
        rel: &[u8],
        content: &ContentId,
        rec: &SilentChange,
    ) {
        self.silent
            .insert(version_key(root, rel, content), encode(rec));
        self.len += 1;
    }

    pub fn put_lost(&mut self, root: u32, rel: &[u8], content: &ContentId, rec: &LostVersion) {
        self.lost
            .insert(version_key(root, rel, content), encode(rec));
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A big-endian counter; anything else reads as 0 (a counter that only decides whether a
/// snapshot is due, and is moved on by the next write anyway).
fn read_u64(b: &[u8]) -> u64 {
    b.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn corrupt(what: impl Into<String>, e: impl std::fmt::Display) -> ManifestError {
    ManifestError::Corrupt {
        what: what.into(),
        reason: e.to_string(),
    }
}

impl Manifest {
    /// Opens (creating if needed) the manifest at `path`, a folder, with a 16 MiB page
    /// cache: commands read records in key order, once, so a larger cache buys little time
    /// and sled's memory grows well past it (at a million files, 64 MiB made `list dirs`
    /// and an export peak at 215-240 MB, 16 MiB at 130 MB, 2-9% slower).
    pub fn open(path: &Path) -> Result<Manifest> {
        Self::open_with_cache(path, 16 << 20)
    }

    /// As [`Manifest::open`], with `cache` bytes of page cache (the daemon, which lives
    /// long and mostly waits, keeps less).
    pub fn open_with_cache(path: &Path, cache: u64) -> Result<Manifest> {
        let m = Self::open_unchecked(path, cache)?;
        m.check_schema()?;
        m.ensure_id()?;
        m.ensure_totals()?;
        Ok(m)
    }

    /// The database as it is on disk, its schema neither checked nor upgraded (tests that
    /// make old manifests).
    #[cfg(test)]
    fn open_raw(path: &Path) -> Result<Manifest> {
        Self::open_unchecked(path, 16 << 20)
    }

    fn open_unchecked(path: &Path, cache: u64) -> Result<Manifest> {
        // A mistyped --db must not scatter database files into a photo folder.
        if let Ok(mut entries) = std::fs::read_dir(path) {
            let ours = path.join("db").is_dir() || path.join("lomob.lock").exists();
            if !ours && entries.next().is_some() {
                return Err(ManifestError::NotAManifest(path.to_path_buf()));
            }
        }
        std::fs::create_dir_all(path).map_err(|source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let lock = DbLock::acquire(path)?;
        compact::recover(path)?;
        let open = |dir: &Path| open_sled(path, dir, cache);
        let mut db = open(&path.join("db"))?;
        let meta = db.open_tree("meta")?;
        let written = compact::read_written(&meta)?;
        // A database from before schema 4 is upgraded first, as it is (so that until the
        // upgrade is verified, the lomob that made it can still open it), and copied after.
        let current = meta
            .get(SCHEMA_KEY)?
            .is_some_and(|v| v.as_ref() >= SCHEMA_VERSION.to_be_bytes().as_slice());
        drop(meta);
        if (current && compact::compressed(&path.join("db")) == Some(false))
            || compact::worthwhile(&db, written)?
        {
            // Worth doing, not needed: a copy that fails leaves the database as it was.
            db = match compact::run(path, db, open) {
                Ok(db) => db,
                Err(e) => {
                    tracing::warn!(
                        "could not compact manifest {} (it is used as it is): {e}",
                        path.display()
                    );
                    compact::recover(path)?;
                    open(&path.join("db"))?
                }
            };
        }
        let m = Manifest {
            path: path.to_path_buf(),
            meta: db.open_tree("meta")?,
            roots: db.open_tree("roots")?,
            files: PagedTree::open(&db, "file-pages", FILE_PAGE)?,
            contents: PagedTree::open(&db, "content-pages", CONTENT_PAGE)?,
            runs: db.open_tree("runs")?,
            isos: db.open_tree("isos")?,
            placements: PagedTree::open(&db, "placement-pages", CONTENT_PAGE)?,
            uploads: db.open_tree("uploads")?,
            staged: PagedTree::open(&db, "staged-pages", CONTENT_PAGE)?,
            archived: PagedTree::open(&db, "archived-pages", CONTENT_PAGE)?,
            pending: db.open_tree("pending")?,
            unverified: db.open_tree("unverified")?,
            silent: db.open_tree("silent")?,
            lost: db.open_tree("lost")?,
            devices: db.open_tree("devices")?,
            thaws: db.open_tree("thaws")?,
            image_objects: db.open_tree("image_objects")?,
            checks: db.open_tree("checks")?,
            alerts: db.open_tree("alerts")?,
            dirs: db.open_tree("dirs")?,
            seals: db.open_tree("seals")?,
            writer: std::sync::Mutex::new(()),
            db,
            _lock: lock,
        };
        Ok(m)
    }

    /// Counts the totals from the records when none are stored: a manifest from before
    /// schema 3, or one whose recount was cut short.
    fn ensure_totals(&self) -> Result<()> {
        if self.meta.get(counts::TOTALS_KEY)?.is_none() {
            if !self.files.is_empty() || !self.contents.is_empty() {
                tracing::info!(
                    "counting the totals of manifest {} (once, after an upgrade)",
                    self.path.display()
                );
            }
            counts::store_recount(self)?;
        }
        Ok(())
    }

    /// The library's totals, as every write has kept them.
    pub fn totals(&self) -> Result<Totals> {
        let v = self
            .meta
            .get(counts::TOTALS_KEY)?
            .ok_or_else(|| corrupt("meta/totals", "missing"))?;
        counts::decode_totals(&v)
    }

    /// Recounts the totals from the records, stores the recount, and returns the stored
    /// totals from before it with the recount (`status --recount`).
    pub fn recount_totals(&self) -> Result<(Totals, Totals)> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.totals()?;
        let after = counts::store_recount(self)?;
        Ok((before, after))
    }

    fn check_schema(&self) -> Result<()> {
        let found = match self.meta.get(SCHEMA_KEY)? {
            None => 0,
            Some(v) => u32::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("meta/schema", "not a 4-byte number"))?,
            ),
        };
        if found > SCHEMA_VERSION {
            return Err(ManifestError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == 0 {
            // A new manifest.
            self.meta
                .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
        } else if found < SCHEMA_VERSION {
            // Versions 1 to 3 share every record format, one sled value each (2 added
            // trees, 3 the totals, which `ensure_totals` counts next); 4 pages them.
            upgrade::to_pages(self, found)?;
        } else {
            // What a stopped upgrade may have left.
            upgrade::finish(self)?;
        }
        Ok(())
    }

    /// Gives a new manifest its id: random, written once, carried by exports so a manifest
    /// recovered on a new machine keeps it.
    fn ensure_id(&self) -> Result<()> {
        if self.meta.get(MANIFEST_ID_KEY)?.is_none() {
            let id = random_id()?;
            self.meta.insert(MANIFEST_ID_KEY, id.as_bytes())?;
        }
        Ok(())
    }

    /// This manifest's id (32 hex digits): how a site's key space knows which manifest
    /// owns it.
    pub fn id(&self) -> Result<String> {
        let v = self
            .meta
            .get(MANIFEST_ID_KEY)?
            .ok_or_else(|| corrupt("meta/manifest-id", "missing"))?;
        String::from_utf8(v.to_vec()).map_err(|e| corrupt("meta/manifest-id", e))
    }

    /// Replaces the id (import only: a recovered manifest keeps its original id).
    pub(crate) fn set_id(&self, id: &str) -> Result<()> {
        self.meta.insert(MANIFEST_ID_KEY, id.as_bytes())?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an import began writing into this manifest and did not finish.
    pub fn import_unfinished(&self) -> Result<bool> {
        Ok(self.meta.contains_key(IMPORT_UNFINISHED_KEY)?)
    }

    /// Refuses a manifest an import left half written: every command but an import (or a
    /// recovery, which imports) calls this after opening.
    pub fn ensure_complete(&self) -> Result<()> {
        if self.import_unfinished()? {
            return Err(ManifestError::ImportUnfinished(self.path.clone()));
        }
        Ok(())
    }

    /// Marks the manifest as an import in progress, durably, before its first record.
    pub(crate) fn begin_import(&self) -> Result<()> {
        self.meta.insert(IMPORT_UNFINISHED_KEY, &[])?;
        self.flush()
    }

    /// The import is complete: flushed, then unmarked.
    pub(crate) fn end_import(&self) -> Result<()> {
        self.flush()?;
        self.meta.remove(IMPORT_UNFINISHED_KEY)?;
        self.flush()
    }

    /// Empties a manifest an import left half written, back to the empty manifest the
    /// import began with (its schema and id are kept, the totals are zero again), and
    /// unmarks it.
    pub(crate) fn discard_unfinished_import(&self) -> Result<()> {
        for tree in self.trees() {
            tree.clear()?;
        }
        for kv in self.meta.iter() {
            let (k, _) = kv?;
            if k != SCHEMA_KEY && k != MANIFEST_ID_KEY && k != IMPORT_UNFINISHED_KEY {
                self.meta.remove(k)?;
            }
        }
        counts::store_recount(self)?;
        // Unmarked last: a discard stopped half-way is discarded again.
        self.end_import()
    }

    /// Every tree but `meta`.
    fn trees(&self) -> [&sled::Tree; 20] {
        [
            &self.roots,
            self.files.pages(),
            self.contents.pages(),
            &self.runs,
            &self.isos,
            self.placements.pages(),
            &self.uploads,
            self.staged.pages(),
            self.archived.pages(),
            &self.pending,
            &self.unverified,
            &self.silent,
            &self.lost,
            &self.devices,
            &self.thaws,
            &self.image_objects,
            &self.checks,
            &self.alerts,
            &self.dirs,
            &self.seals,
        ]
    }

    /// Copies the manifest at `path` into a fresh database if much of its file is old
    /// versions of pages (what [`compaction_wanted`] says after a command's writes).
    pub fn compact_if_worthwhile(path: &Path) -> Result<()> {
        Self::open(path).map(drop)
    }

    /// True when no root, file, content or run has been recorded.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
            && self.files.is_empty()
            && self.contents.is_empty()
            && self.runs.is_empty()
    }

    pub fn roots(&self) -> Result<Vec<RootRecord>> {
        self.roots
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&v).map_err(|e| corrupt(format!("roots/{}", hex::encode(k)), e))
            })
            .collect()
    }

    pub fn root(&self, id: u32) -> Result<Option<RootRecord>> {
        match self.roots.get(id.to_be_bytes())? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|e| corrupt(format!("roots/{id}"), e)),
        }
    }

    /// The root recorded for this absolute path, added if new.
    pub fn ensure_root(&self, path: &[u8], now: i64) -> Result<RootRecord> {
        if let Some(r) = self.roots()?.into_iter().find(|r| r.path == path) {
            return Ok(r);
        }
        let id = self.next_id(NEXT_ROOT_KEY)? as u32;
        let rec = RootRecord {
            id,
            path: path.to_vec(),
            added: now,
        };
        self.bump_generation()?;
        self.roots.insert(id.to_be_bytes(), encode(&rec))?;
        Ok(rec)
    }

    /// The folders of one root the last scan saw, with their modification times (ns), in
    /// path order; the root itself has the empty path.
    pub fn dirs_of_root(&self, root: u32) -> Result<Vec<(Vec<u8>, i64)>> {
        self.dirs_under(root, b"")
    }

    fn dirs_under(&self, root: u32, prefix: &[u8]) -> Result<Vec<(Vec<u8>, i64)>> {
        let mut out = Vec::new();
        for kv in self.dirs.scan_prefix(file_key(root, prefix)) {
            let (k, v) = kv?;
            let t = v
                .as_ref()
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| corrupt("dirs", "not an 8-byte time"))?;
            out.push((k[4..].to_vec(), t));
        }
        Ok(out)
    }

    /// Records folders (`(path, mtime)`) and forgets others, in one batch.
    pub fn update_dirs(&self, root: u32, put: &[(Vec<u8>, i64)], forget: &[Vec<u8>]) -> Result<()> {
        let mut b = sled::Batch::default();
        for (rel, t) in put {
            b.insert(file_key(root, rel), &t.to_be_bytes());
        }
        for rel in forget {
            b.remove(file_key(root, rel));
        }
        self.dirs.apply_batch(b)?;
        Ok(())
    }

    /// Forgets the folder `rel` and every folder under it (it is gone).
    pub fn forget_dirs_under(&self, root: u32, rel: &[u8]) -> Result<()> {
        let gone: Vec<Vec<u8>> = self
            .dirs_under(root, rel)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.len() == rel.len() || k.get(rel.len()) == Some(&b'/'))
            .collect();
        self.update_dirs(root, &[], &gone)
    }

    /// The stat fields of the files of one root whose path starts with `prefix` (a folder
    /// with its trailing '/', or one file's exact path), in path order.
    pub fn file_stats_under(&self, root: u32, prefix: &[u8]) -> Result<Vec<(Vec<u8>, FileStat)>> {
        self.file_stats_iter(root, prefix).collect()
    }

    /// As [`Manifest::file_stats_under`], read as iterated.
    pub fn file_stats_iter(
        &self,
        root: u32,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, FileStat)>> {
        self.files
            .scan_prefix(&file_key(root, prefix))
            .map(move |kv| {
                let (k, v) = kv?;
                let stat = decode_stat(&v).map_err(|e| {
                    corrupt(
                        format!("files/{root}/{}", String::from_utf8_lossy(&k[4..])),
                        e,
                    )
                })?;
                Ok((k[4..].to_vec(), stat))
            })
    }

    /// Reads the records of the files directly in folder `dir` (relative to the root, empty
    /// for the root itself) in path order, and names once each subfolder holding records
    /// instead of reading its files (the key range of a subfolder is skipped with one seek).
    /// A rescan merges one folder's listing with this, so its memory grows with a folder,
    /// not with the library.
    pub fn for_each_in_folder(
        &self,
        root: u32,
        dir: &[u8],
        mut each: impl FnMut(FolderItem<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut prefix = file_key(root, dir);
        if !dir.is_empty() {
            prefix.push(b'/');
        }
        let mut start = prefix.clone();
        'seek: loop {
            for kv in self.files.range_from(&start) {
                let (k, v) = kv?;
                let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                    return Ok(());
                };
                match rest.iter().position(|&b| b == b'/') {
                    None => {
                        let stat = decode_stat(&v).map_err(|e| {
                            corrupt(
                                format!("files/{root}/{}", String::from_utf8_lossy(&k[4..])),
                                e,
                            )
                        })?;
                        each(FolderItem::File(&k[4..], stat))?;
                    }
                    Some(end) => {
                        let name = &rest[..end];
                        each(FolderItem::Subfolder(name))?;
                        // Every key under `name/` sorts before `name0` ('0' follows '/').
                        start.truncate(prefix.len());
                        start.extend_from_slice(name);
                        start.push(b'/' + 1);
                        continue 'seek;
                    }
                }
            }
            return Ok(());
        }
    }

    /// The stat fields of one file, without decoding its versions.
    pub fn file_stat(&self, root: u32, rel: &[u8]) -> Result<Option<FileStat>> {
        match self.files.get(&file_key(root, rel))? {
            None => Ok(None),
            Some(v) => decode_stat(&v).map(Some).map_err(|e| corrupt("files", e)),
        }
    }

    /// Every file record, in key order: (root id, relative path, record).
    pub fn files(&self) -> impl Iterator<Item = Result<(u32, Vec<u8>, FileRecord)>> + '_ {
        self.files_after(None)
    }

    /// As [`Manifest::files`], starting after the file key `after` (all when `None`).
    pub fn files_after(
        &self,
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(u32, Vec<u8>, FileRecord)>> + '_ {
        let after = after.map(<[u8]>::to_vec);
        self.files
            .range_from(after.as_deref().unwrap_or_default())
            .filter(move |kv| !matches!((kv, &after), (Ok((k, _)), Some(a)) if k == a))
            .map(|kv| {
                let (k, v) = kv?;
                let (root, rel) = split_file_key(&k)
                    .ok_or_else(|| corrupt("files", "key shorter than 4 bytes"))?;
                let rec = decode(&v).map_err(|e| {
                    corrupt(format!("files/{root}/{}", String::from_utf8_lossy(rel)), e)
                })?;
                Ok((root, rel.to_vec(), rec))
            })
    }

    pub fn file(&self, root: u32, rel: &[u8]) -> Result<Option<FileRecord>> {
        match self.files.get(&file_key(root, rel))? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|e| corrupt("files", e)),
        }
    }

    pub fn content(&self, id: &ContentId) -> Result<Option<ContentRecord>> {
        match self.contents.get(id)? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|e| corrupt(format!("contents/{}", hex::encode(id)), e)),
        }
    }

    pub fn contents(&self) -> impl Iterator<Item = Result<(ContentId, ContentRecord)>> + '_ {
        self.contents.iter().map(|kv| {
            let (k, v) = kv?;
            let id: ContentId = k
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("contents", "key is not 16 bytes"))?;
            let rec =
                decode(&v).map_err(|e| corrupt(format!("contents/{}", hex::encode(id)), e))?;
            Ok((id, rec))
        })
    }

    /// Applies a batch and the totals' change it makes, in one transaction: a kill leaves
    /// either all of it or none.
    pub fn apply(&self, batch: ManifestBatch) -> Result<()> {
        use sled::transaction::{TransactionError, Transactional as _};
        if batch.is_empty() {
            return Ok(());
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut delta = counts::Delta::new(self, self.totals()?);
        // Worked out in the order the records are written: contents first (a file record
        // must never point at a content that is not there), archived before unstaged (a
        // content is never left recorded nowhere).
        for (id, rec, size) in &batch.contents {
            delta.put_content(id, rec, *size)?;
        }
        let mut files = Vec::with_capacity(batch.files.len());
        for (key, put) in batch.files {
            delta.put_file(&key, put.as_ref().map(|(_, share)| *share))?;
            files.push((key, put.map(|(rec, _)| rec)));
        }
        let mut archived = Vec::with_capacity(batch.archived.len());
        for (site, c, rec) in batch.archived {
            delta.set_archived(&site, &c, rec.is_some())?;
            archived.push((site_key(&site, &c), rec));
        }
        let mut staged = Vec::with_capacity(batch.staged.len());
        for (site, c, rec) in batch.staged {
            delta.set_staged(&site, &c, rec.as_ref().map(|(_, size)| *size))?;
            staged.push((site_key(&site, &c), rec.map(|(r, _)| r)));
        }
        // The pages each tree's writes make (written records, and the live counts the
        // files changed).
        let contents = self.contents.batch(delta.content_writes())?;
        let files = self.files.batch(files)?;
        let archived = self.archived.batch(archived)?;
        let staged = self.staged.batch(staged)?;
        let placements = self.placements.batch(batch.placements)?;
        let bytes: u64 = [&contents, &files, &archived, &staged, &placements]
            .iter()
            .map(|b| b.bytes)
            .sum();
        let totals = counts::encode_totals(&delta.totals);
        let trees = (
            self.contents.pages(),
            self.files.pages(),
            &self.silent,
            &self.lost,
            self.placements.pages(),
            self.archived.pages(),
            self.staged.pages(),
            &self.meta,
        );
        let written = trees
            .transaction(|(c, f, si, lo, p, a, st, me)| {
                c.apply_batch(&contents.batch)?;
                f.apply_batch(&files.batch)?;
                si.apply_batch(&batch.silent)?;
                lo.apply_batch(&batch.lost)?;
                p.apply_batch(&placements.batch)?;
                a.apply_batch(&archived.batch)?;
                st.apply_batch(&staged.batch)?;
                me.insert(counts::TOTALS_KEY, totals.as_slice())?;
                let generation = me.get(GENERATION_KEY)?.map_or(0, |v| read_u64(&v));
                me.insert(GENERATION_KEY, &(generation + 1).to_be_bytes())?;
                let written = me.get(compact::WRITTEN_KEY)?.map_or(0, |v| read_u64(&v));
                let written = written + bytes;
                me.insert(compact::WRITTEN_KEY, &written.to_be_bytes())?;
                Ok::<u64, sled::transaction::ConflictableTransactionError<()>>(written)
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => ManifestError::from(e),
                TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })?;
        // The counter this transaction wrote, not read back.
        if !compact::wanted() && compact::worthwhile(&self.db, written)? {
            compact::want();
        }
        Ok(())
    }

    fn per_site<T: SiteRecord>(
        tree: &PagedTree,
        name: &'static str,
        site: Option<&str>,
    ) -> Result<Vec<(String, ContentId, T)>> {
        Self::per_site_iter(tree, name, site).collect()
    }

    /// A per-site tree's records in key order, read as they are needed.
    fn per_site_iter<T: SiteRecord>(
        tree: &PagedTree,
        name: &'static str,
        site: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, ContentId, T)>> + use<T> {
        let prefix = match site {
            Some(s) => [s.as_bytes(), &[0]].concat(),
            None => Vec::new(),
        };
        tree.scan_prefix(&prefix).map(move |kv| {
            let (k, v) = kv?;
            let bad = || corrupt(name, "malformed key");
            let nul = k.iter().position(|&b| b == 0).ok_or_else(bad)?;
            let site = String::from_utf8(k[..nul].to_vec()).map_err(|_| bad())?;
            let content: ContentId = k[nul + 1..].try_into().map_err(|_| bad())?;
            let rec = T::decode_for(&content, &v).map_err(|e| corrupt(name, e))?;
            Ok((site, content, rec))
        })
    }

    /// Every staged record of every site, read as iterated (exports).
    pub fn staged_iter(&self) -> impl Iterator<Item = Result<(String, ContentId, StagedRecord)>> {
        Self::per_site_iter(&self.staged, "staged", None)
    }

    /// Every archived record of every site, read as iterated (exports).
    pub fn archived_iter(
        &self,
    ) -> impl Iterator<Item = Result<(String, ContentId, ArchivedRecord)>> {
        Self::per_site_iter(&self.archived, "archived", None)
    }

    /// Contents staged on `site` (or on every site when `None`).
    pub fn staged(&self, site: Option<&str>) -> Result<Vec<(String, ContentId, StagedRecord)>> {
        Self::per_site(&self.staged, "staged", site)
    }

    /// Contents archived on `site` (or on every site when `None`).
    pub fn archived(&self, site: Option<&str>) -> Result<Vec<(String, ContentId, ArchivedRecord)>> {
        Self::per_site(&self.archived, "archived", site)
    }

    /// The staged record of `content` on `site`, if it is staged there.
    pub fn staged_record(&self, site: &str, content: &ContentId) -> Result<Option<StagedRecord>> {
        match self.staged.get(&site_key(site, content))? {
            None => Ok(None),
            Some(v) => Ok(Some(
                StagedRecord::decode_for(content, &v).map_err(|e| corrupt("staged", e))?,
            )),
        }
    }

    /// Contents held by present files (as their current version) with no staged or
    /// archived copy on `site`: what is not yet safe there. One pass over the contents in
    /// key order, merged with the site's staged and archived records (the same order), so
    /// no record is looked up on its own. `None` when there are more than `limit`.
    pub fn unsafe_contents(&self, site: &str, limit: usize) -> Result<Option<HashSet<ContentId>>> {
        let mut prefix = site.as_bytes().to_vec();
        prefix.push(0);
        let ids = |tree: &PagedTree| {
            let n = prefix.len();
            tree.scan_prefix(&prefix).map(move |kv| {
                let (k, _) = kv?;
                ContentId::try_from(&k[n..]).map_err(|_| corrupt("staged/archived", "bad key"))
            })
        };
        let mut staged = ids(&self.staged).peekable();
        let mut archived = ids(&self.archived).peekable();
        let mut out = HashSet::new();
        for kv in self.contents.iter() {
            let (k, v) = kv?;
            let c = ContentId::try_from(k.as_ref())
                .map_err(|_| corrupt("contents", "key is not 16 bytes"))?;
            let (_, _, live) = counts::decode_content(&c, &v)?;
            if live == Some(0) {
                continue;
            }
            if holds(&mut staged, &c)? | holds(&mut archived, &c)? {
                continue;
            }
            if out.len() == limit {
                return Ok(None);
            }
            out.insert(c);
        }
        Ok(Some(out))
    }

    /// True when `content` is archived (in a verified image) on `site`.
    pub fn is_archived(&self, site: &str, content: &ContentId) -> Result<bool> {
        self.archived.contains_key(&site_key(site, content))
    }

    /// Staged copies on `site` whose content is archived there too: to be freed. Reads the
    /// site's staged records once, holding only the matches.
    pub fn staged_and_archived(&self, site: &str) -> Result<Vec<(ContentId, StagedRecord)>> {
        let mut prefix = site.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        // Both trees are in the same key order: walk them side by side.
        let mut archived = self
            .archived
            .scan_prefix(&prefix)
            .map(|kv| kv.map(|(k, _)| k))
            .peekable();
        for kv in self.staged.scan_prefix(&prefix) {
            let (k, v) = kv?;
            if holds(&mut archived, &k)? {
                let content: ContentId = k[prefix.len()..]
                    .try_into()
                    .map_err(|_| corrupt("staged", "malformed key"))?;
                let rec =
                    StagedRecord::decode_for(&content, &v).map_err(|e| corrupt("staged", e))?;
                out.push((content, rec));
            }
        }
        Ok(out)
    }

    /// True when a copy of the content is staged or archived on any site. Scans the per-site
    /// trees (their keys lead with the site): for rare questions, not for every file.
    pub fn has_copy(&self, content: &ContentId) -> Result<bool> {
        for tree in [&self.staged, &self.archived] {
            for kv in tree.iter() {
                if kv?.0.ends_with(content) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Every image, by id.
    pub fn isos(&self) -> Result<Vec<IsoRecord>> {
        self.isos
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&v).map_err(|e| corrupt(format!("isos/{}", hex::encode(k)), e))
            })
            .collect()
    }

    pub fn iso_by_name(&self, name: &str) -> Result<Option<IsoRecord>> {
        Ok(self.isos()?.into_iter().find(|i| i.name == name))
    }

    /// Stores an image record; `id == 0` allocates a new id (returned).
    pub fn put_iso(&self, rec: &mut IsoRecord) -> Result<u32> {
        if rec.id == 0 {
            rec.id = self.next_id(NEXT_ISO_KEY)? as u32;
        }
        self.bump_generation()?;
        self.isos.insert(rec.id.to_be_bytes(), encode(rec))?;
        Ok(rec.id)
    }

    /// The images holding a content, with where it sits in each.
    pub fn placements_of(&self, content: &ContentId) -> Result<Vec<(u32, PlacementRecord)>> {
        self.placements
            .scan_prefix(content)
            .map(|kv| {
                let (k, v) = kv?;
                let iso = k
                    .get(16..20)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| corrupt("placements", "key is not 20 bytes"))?;
                let rec = decode(&v).map_err(|e| corrupt("placements", e))?;
                Ok((iso, rec))
            })
            .collect()
    }

    /// Every placement: (content, image id, record).
    pub fn placements(
        &self,
    ) -> impl Iterator<Item = Result<(ContentId, u32, PlacementRecord)>> + '_ {
        self.placements.iter().map(|kv| {
            let (k, v) = kv?;
            if k.len() != 20 {
                return Err(corrupt("placements", "key is not 20 bytes"));
            }
            let content: ContentId = k[..16].try_into().expect("length checked");
            let iso = u32::from_be_bytes(k[16..].try_into().expect("length checked"));
            let rec = decode(&v).map_err(|e| corrupt("placements", e))?;
            Ok((content, iso, rec))
        })
    }

    /// True when the content is inside at least one image.
    pub fn is_packed(&self, content: &ContentId) -> Result<bool> {
        Ok(self
            .placements
            .scan_prefix(content)
            .next()
            .transpose()?
            .is_some())
    }

    /// Images chosen for upload on `site` and not recorded yet.
    pub fn pending_images(&self, site: &str) -> Result<Vec<PendingImage>> {
        let mut prefix = site.as_bytes().to_vec();
        prefix.push(0);
        self.pending
            .scan_prefix(prefix)
            .map(|kv| {
                let (_, v) = kv?;
                decode(&v).map_err(|e| corrupt("pending", e))
            })
            .collect()
    }

    /// Records (or replaces) a pending image, durably.
    pub fn put_pending(&self, p: &PendingImage) -> Result<()> {
        self.pending
            .insert(site_name_key(&p.site, &p.name), encode(p))?;
        self.flush()
    }

    pub fn remove_pending(&self, site: &str, name: &str) -> Result<()> {
        self.pending.remove(site_name_key(site, name))?;
        self.flush()
    }

    /// Records (or replaces) a thaw request, durably: it was sent and is billed.
    pub fn put_thaw(&self, site: &str, t: &ThawRecord) -> Result<()> {
        self.thaws.insert(site_name_key(site, &t.key), encode(t))?;
        self.flush()
    }

    /// The thaw recorded for `key` on `site`.
    pub fn thaw(&self, site: &str, key: &str) -> Result<Option<ThawRecord>> {
        self.thaws
            .get(site_name_key(site, key))?
            .map(|v| decode(&v).map_err(|e| corrupt("thaws", e)))
            .transpose()
    }

    /// Every thaw recorded: (site, thaw).
    pub fn thaws(&self) -> Result<Vec<(String, ThawRecord)>> {
        self.thaws
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let site = k.split(|&b| b == 0).next().unwrap_or_default();
                let t = decode(&v).map_err(|e| corrupt("thaws", e))?;
                Ok((String::from_utf8_lossy(site).into_owned(), t))
            })
            .collect()
    }

    pub fn remove_thaw(&self, site: &str, key: &str) -> Result<()> {
        self.thaws.remove(site_name_key(site, key))?;
        self.flush()
    }

    /// The seal of an encrypted image upload on `site`.
    pub fn image_seal(&self, site: &str, key: &str) -> Result<Option<crate::crypt::ImageSeal>> {
        self.seals
            .get(site_name_key(site, key))?
            .map(|v| decode(&v).map_err(|e| corrupt("seals", e)))
            .transpose()
    }

    /// Records a seal durably, before any byte sealed with it is sent.
    pub fn put_image_seal(
        &self,
        site: &str,
        key: &str,
        seal: &crate::crypt::ImageSeal,
    ) -> Result<()> {
        self.seals.insert(site_name_key(site, key), encode(seal))?;
        self.flush()
    }

    pub fn remove_image_seal(&self, site: &str, key: &str) -> Result<()> {
        self.seals.remove(site_name_key(site, key))?;
        Ok(())
    }

    /// Records what an archived image looked like when verified (see [`ImageObject`]).
    pub fn put_image_object(&self, site: &str, name: &str, o: &ImageObject) -> Result<()> {
        self.image_objects
            .insert(site_name_key(site, name), encode(o))?;
        Ok(())
    }

    pub fn image_object(&self, site: &str, name: &str) -> Result<Option<ImageObject>> {
        self.image_objects
            .get(site_name_key(site, name))?
            .map(|v| decode(&v).map_err(|e| corrupt("image_objects", e)))
            .transpose()
    }

    pub fn remove_image_object(&self, site: &str, name: &str) -> Result<()> {
        self.image_objects.remove(site_name_key(site, name))?;
        Ok(())
    }

    pub fn alert_state(&self, source: &str) -> Result<Option<AlertState>> {
        self.alerts
            .get(source.as_bytes())?
            .map(|v| decode(&v).map_err(|e| corrupt("alerts", e)))
            .transpose()
    }

    /// Every alert source with its last alert.
    pub fn alert_states(&self) -> Result<Vec<(String, AlertState)>> {
        self.alerts
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let a = decode(&v).map_err(|e| corrupt("alerts", e))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), a))
            })
            .collect()
    }

    pub fn put_alert_state(&self, source: &str, a: &AlertState) -> Result<()> {
        self.alerts.insert(source.as_bytes(), encode(a))?;
        self.flush()
    }

    pub fn remove_alert_state(&self, source: &str) -> Result<()> {
        self.alerts.remove(source.as_bytes())?;
        self.flush()
    }

    /// Records the last run of a check part, durably.
    pub fn put_check(&self, site: &str, c: &CheckRecord) -> Result<()> {
        self.checks
            .insert(site_name_key(site, &c.part), encode(c))?;
        self.flush()
    }

    pub fn check_record(&self, site: &str, part: &str) -> Result<Option<CheckRecord>> {
        self.checks
            .get(site_name_key(site, part))?
            .map(|v| decode(&v).map_err(|e| corrupt("checks", e)))
            .transpose()
    }

    /// Records an archive object lomob does not count (see [`UnverifiedObject`]), durably.
    pub fn put_unverified(&self, site: &str, o: &UnverifiedObject) -> Result<()> {
        self.bump_generation()?;
        self.unverified
            .insert(site_name_key(site, &o.key), encode(o))?;
        self.flush()
    }

    /// Unverified objects of `site` (or of every site): (site, object).
    pub fn unverified(&self, site: Option<&str>) -> Result<Vec<(String, UnverifiedObject)>> {
        let iter = match site {
            Some(s) => {
                let mut p = s.as_bytes().to_vec();
                p.push(0);
                self.unverified.scan_prefix(p)
            }
            None => self.unverified.iter(),
        };
        iter.map(|kv| {
            let (k, v) = kv?;
            let nul = k
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| corrupt("unverified", "malformed key"))?;
            let site = String::from_utf8_lossy(&k[..nul]).into_owned();
            Ok((site, decode(&v).map_err(|e| corrupt("unverified", e))?))
        })
        .collect()
    }

    /// Versions that changed without a new mtime (the record's content is the new one).
    pub fn silent_changes(&self) -> Result<Vec<VersionNote<SilentChange>>> {
        Self::per_version(&self.silent, "silent")
    }

    /// Versions lost before any copy was made.
    pub fn lost_versions(&self) -> Result<Vec<VersionNote<LostVersion>>> {
        Self::per_version(&self.lost, "lost")
    }

    fn per_version<T: serde::de::DeserializeOwned>(
        tree: &sled::Tree,
        name: &str,
    ) -> Result<Vec<VersionNote<T>>> {
        tree.iter()
            .map(|kv| {
                let (k, v) = kv?;
                let (root, rel, content) =
                    split_version_key(&k).ok_or_else(|| corrupt(name, "malformed key"))?;
                let note = decode(&v).map_err(|e| corrupt(name, e))?;
                Ok(VersionNote {
                    root,
                    rel: rel.to_vec(),
                    content,
                    note,
                })
            })
            .collect()
    }

    /// The devices recorded for a root at its last scan.
    pub fn root_devices(&self, root: u32) -> Result<Option<RootDevices>> {
        match self.devices.get(root.to_be_bytes())? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|e| corrupt(format!("devices/{root}"), e)),
        }
    }

    pub fn put_root_devices(&self, root: u32, rec: &RootDevices) -> Result<()> {
        self.devices.insert(root.to_be_bytes(), encode(rec))?;
        Ok(())
    }

    /// A site's remembered setting (see [`SiteFlag`]).
    pub fn site_flag(&self, site: &str, flag: SiteFlag) -> Result<bool> {
        Ok(self.meta.get(flag.key(site))?.is_some())
    }

    pub fn set_site_flag(&self, site: &str, flag: SiteFlag) -> Result<()> {
        self.meta.insert(flag.key(site), &[1u8][..])?;
        self.flush()
    }

    /// The next manifest snapshot's sequence number (increasing, whatever the clock does).
    pub fn next_snapshot_seq(&self) -> Result<u64> {
        self.next_id(NEXT_SNAPSHOT_KEY)
    }

    /// Moves the generation on. Called before the write it announces, so a kill between
    /// the two can cost one snapshot too many, never one too few.
    fn bump_generation(&self) -> Result<()> {
        self.meta.update_and_fetch(GENERATION_KEY, |old| {
            Some((old.map_or(0, read_u64) + 1).to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    /// Where the records a snapshot holds stand: equal generations, equal records.
    pub fn generation(&self) -> Result<u64> {
        Ok(self.meta.get(GENERATION_KEY)?.map_or(0, |v| read_u64(&v)))
    }

    /// The last snapshot put on `site`'s stage: the generation it was taken at and its key.
    pub fn last_snapshot(&self, site: &str) -> Result<Option<(u64, String)>> {
        self.meta
            .get(format!("snapshot/{site}").as_bytes())?
            .map(|v| decode(&v).map_err(|e| corrupt(format!("meta/snapshot/{site}"), e)))
            .transpose()
    }

    pub fn set_last_snapshot(&self, site: &str, generation: u64, key: &str) -> Result<()> {
        self.meta.insert(
            format!("snapshot/{site}").as_bytes(),
            encode(&(generation, key)),
        )?;
        Ok(())
    }

    /// A time (Unix seconds) the daemon keeps across restarts under `key`: the last
    /// scheduled run of a job that was handled, the last reconciliation scan.
    pub fn mark(&self, key: &str) -> Result<Option<i64>> {
        let k = format!("mark/{key}");
        match self.meta.get(k.as_bytes())? {
            None => Ok(None),
            Some(v) => v
                .as_ref()
                .try_into()
                .map(|b| Some(i64::from_be_bytes(b)))
                .map_err(|_| corrupt(format!("meta/{k}"), "not an 8-byte number")),
        }
    }

    pub fn set_mark(&self, key: &str, at: i64) -> Result<()> {
        self.meta
            .insert(format!("mark/{key}").as_bytes(), &at.to_be_bytes())?;
        Ok(())
    }

    pub fn remove_mark(&self, key: &str) -> Result<()> {
        self.meta.remove(format!("mark/{key}").as_bytes())?;
        Ok(())
    }

    /// Records a finished command; returns its id (increasing).
    pub fn add_run(&self, run: &RunRecord) -> Result<u64> {
        let id = self.next_id(NEXT_RUN_KEY)?;
        self.runs.insert(id.to_be_bytes(), encode(run))?;
        Ok(id)
    }

    /// Runs, newest first.
    pub fn runs(&self) -> impl Iterator<Item = Result<(u64, RunRecord)>> + '_ {
        self.runs.iter().rev().map(|kv| {
            let (k, v) = kv?;
            let id = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("runs", "key is not 8 bytes"))?,
            );
            let rec = decode(&v).map_err(|e| corrupt(format!("runs/{id}"), e))?;
            Ok((id, rec))
        })
    }

    /// Where one site's resumable archive uploads remember their parts.
    pub fn upload_journal(&self, site: &str) -> UploadJournalTree {
        UploadJournalTree {
            tree: self.uploads.clone(),
            db: self.db.clone(),
            prefix: format!("{site}\0").into_bytes(),
        }
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Raw access for export and import, which must see every tree exactly.
    /// Increments a counter in `meta` and returns its new value (the first is 1).
    fn next_id(&self, key: &[u8]) -> Result<u64> {
        let v = self.meta.update_and_fetch(key, |old| {
            let n = old
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        v.and_then(|b| b.as_ref().try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt(String::from_utf8_lossy(key), "counter missing after update"))
    }

    /// Makes sure a counter is at least `n`, so ids imported from an export never collide
    /// with ids handed out later.
    fn raise_counter(&self, key: &[u8], n: u64) -> Result<()> {
        self.meta.update_and_fetch(key, |old| {
            let cur = old
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(cur.max(n).to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    /// Raw inserts for import, which must reproduce the exported ids exactly.
    fn raw_insert_root(&self, rec: &RootRecord) -> Result<()> {
        self.bump_generation()?;
        self.roots.insert(rec.id.to_be_bytes(), encode(rec))?;
        self.raise_counter(NEXT_ROOT_KEY, rec.id.into())
    }

    fn raw_insert_iso(&self, rec: &IsoRecord) -> Result<()> {
        self.bump_generation()?;
        self.isos.insert(rec.id.to_be_bytes(), encode(rec))?;
        self.raise_counter(NEXT_ISO_KEY, rec.id.into())
    }

    fn raw_insert_run(&self, id: u64, rec: &RunRecord) -> Result<()> {
        self.runs.insert(id.to_be_bytes(), encode(rec))?;
        self.raise_counter(NEXT_RUN_KEY, id)
    }
}

/// The upload journal of one site, kept in the manifest so that a run killed mid-upload
/// continues where it stopped. Every save is flushed before it returns.
pub struct UploadJournalTree {
    tree: sled::Tree,
    db: sled::Db,
    prefix: Vec<u8>,
}

impl UploadJournalTree {
    fn key(&self, key: &str) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key.as_bytes());
        k
    }
}

fn journal_err(e: impl std::fmt::Display) -> lomob_backends::BackendError {
    lomob_backends::BackendError::Journal(format!("manifest: {e}"))
}

impl lomob_backends::journal::UploadJournal for UploadJournalTree {
    fn load(
        &self,
        key: &str,
    ) -> std::result::Result<
        Option<lomob_backends::journal::UploadState>,
        lomob_backends::BackendError,
    > {
        match self.tree.get(self.key(key)).map_err(journal_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(journal_err),
        }
    }

    fn save(
        &self,
        state: &lomob_backends::journal::UploadState,
    ) -> std::result::Result<(), lomob_backends::BackendError> {
        let v = serde_json::to_vec(state).map_err(journal_err)?;
        self.tree
            .insert(self.key(&state.key), v)
            .map_err(journal_err)?;
        self.db.flush().map_err(journal_err)?;
        Ok(())
    }

    fn clear(&self, key: &str) -> std::result::Result<(), lomob_backends::BackendError> {
        self.tree.remove(self.key(key)).map_err(journal_err)?;
        self.db.flush().map_err(journal_err)?;
        Ok(())
    }

    fn list(
        &self,
    ) -> std::result::Result<Vec<lomob_backends::journal::UploadState>, lomob_backends::BackendError>
    {
        self.tree
            .scan_prefix(&self.prefix)
            .map(|kv| {
                let (_, v) = kv.map_err(journal_err)?;
                serde_json::from_slice(&v).map_err(journal_err)
            })
            .collect()
    }
}

/// 128 random bits as hex.
/// Whether `key` is the next key of `keys`, a sorted stream read alongside another in the
/// same order (those before it are skipped).
fn holds<K: Ord>(
    keys: &mut std::iter::Peekable<impl Iterator<Item = Result<K>>>,
    key: &K,
) -> Result<bool> {
    while let Some(next) = keys.peek() {
        match next {
            Ok(k) if k < key => {
                keys.next();
            }
            Ok(k) => return Ok(k == key),
            Err(_) => return keys.next().expect("peeked").map(|_| false),
        }
    }
    Ok(false)
}

/// Opens the sled database in `dir` (of the manifest at `manifest`) with lomob's settings.
fn open_sled(manifest: &Path, dir: &Path, cache: u64) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(dir)
        // The default cache is 1 GB; rescans stream through records once, so a small
        // cache costs little and keeps lomob light on a home server.
        .cache_capacity(cache)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(Some(2000))
        // Pages are rewritten whole, so sled's log holds several versions of each until
        // it frees them: zstd's fastest level halves both that and the database's size.
        // A database made before compression was used keeps it off until it is copied.
        .use_compression(compact::compressed(dir).unwrap_or(true))
        .compression_factor(1);
    // Our lock says no other process has the database, so sled's own file lock can only
    // be held by a handle this process just dropped: sled's flusher thread lets it go a
    // moment after the drop. Wait for that rather than fail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(ManifestError::Open {
                    path: manifest.to_path_buf(),
                    source: Box::new(e),
                })
            }
        }
    }
}

fn random_id() -> Result<String> {
    Ok(hex::encode(rand::random::<[u8; 16]>()))
}

/// Unix seconds now.
/// RFC 3339 (UTC) from unix seconds, for JSON and messages.
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| secs.to_string())
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(content: u8) -> FileRecord {
        FileRecord::one_version([content; 16], 3, 5)
    }

    #[test]
    fn roots_files_and_contents_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = Manifest::open(dir.path()).unwrap();
            let r = m.ensure_root(b"/photos", 1).unwrap();
            assert_eq!(r.id, 1);
            assert_eq!(m.ensure_root(b"/photos", 2).unwrap().id, 1);
            assert_eq!(m.ensure_root(b"/videos", 2).unwrap().id, 2);
            let mut b = ManifestBatch::default();
            b.put_content(
                &[1; 16],
                &ContentRecord {
                    size: 3,
                    sha256: [2; 32],
                    first_seen: 1,
                },
            );
            b.put_file(1, b"a.jpg", &rec(1));
            b.put_file(2, b"\xff.jpg", &rec(1));
            m.apply(b).unwrap();
            m.flush().unwrap();
        }
        let m = Manifest::open(dir.path()).unwrap();
        assert_eq!(m.file_stats_under(1, b"").unwrap().len(), 1);
        assert_eq!(m.file(2, b"\xff.jpg").unwrap(), Some(rec(1)));
        assert_eq!(m.content(&[1; 16]).unwrap().unwrap().sha256, [2; 32]);
        assert_eq!(m.files().count(), 2);
    }

    #[test]
    fn a_folder_is_read_without_its_subfolders_files() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::open(dir.path()).unwrap();
        let mut b = ManifestBatch::default();
        let paths: &[&[u8]] = &[
            b"top.jpg",
            b"a/b.jpg",
            b"a/b/x.jpg",
            b"a/b/y/z.jpg",
            b"a/b!.jpg",
            b"a/b0.jpg",
            b"a/c/d.jpg",
            b"a/z.jpg",
            b"ab/other.jpg",
        ];
        for p in paths {
            b.put_file(1, p, &rec(1));
        }
        b.put_file(2, b"a/elsewhere.jpg", &rec(1));
        m.apply(b).unwrap();
        let read = |dir: &[u8]| {
            let mut out = Vec::new();
            m.for_each_in_folder(1, dir, |item| {
                out.push(match item {
                    FolderItem::File(rel, _) => String::from_utf8_lossy(rel).into_owned(),
                    FolderItem::Subfolder(name) => {
                        format!("{}/", String::from_utf8_lossy(name))
                    }
                });
                Ok(())
            })
            .unwrap();
            out
        };
        assert_eq!(read(b""), ["a/", "ab/", "top.jpg"]);
        assert_eq!(
            read(b"a"),
            ["a/b!.jpg", "a/b.jpg", "b/", "a/b0.jpg", "c/", "a/z.jpg"]
        );
        assert_eq!(read(b"a/b"), ["a/b/x.jpg", "y/"]);
        assert!(read(b"nothing").is_empty());
    }

    #[test]
    fn the_generation_moves_with_snapshotted_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::open(dir.path()).unwrap();
        let mut last = m.generation().unwrap();
        let mut moved = |what: &str, expect: bool| {
            let now = m.generation().unwrap();
            assert_eq!(now != last, expect, "{what}: {last} -> {now}");
            last = now;
        };
        m.ensure_root(b"/photos", 1).unwrap();
        moved("new root", true);
        m.ensure_root(b"/photos", 2).unwrap();
        moved("known root", false);
        let mut b = ManifestBatch::default();
        b.put_file(1, b"a.jpg", &rec(1));
        m.apply(b).unwrap();
        moved("a file record", true);
        m.apply(ManifestBatch::default()).unwrap();
        moved("an empty batch", false);
        m.add_run(&RunRecord::default()).unwrap();
        moved("a run", false);
        m.update_dirs(1, &[(b"x".to_vec(), 1)], &[]).unwrap();
        moved("a folder's date", false);
        m.set_last_snapshot("s", 7, "meta/manifest-1.jsonl")
            .unwrap();
        moved("the snapshot's own note", false);
        assert_eq!(
            m.last_snapshot("s").unwrap(),
            Some((7, "meta/manifest-1.jsonl".to_string()))
        );
        assert_eq!(m.last_snapshot("other").unwrap(), None);
    }

    #[test]
    fn a_second_open_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _m = Manifest::open(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts just as another process would.
        match Manifest::open(dir.path()) {
            Err(ManifestError::InUse { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("expected InUse, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = Manifest::open(dir.path()).unwrap();
            m.meta.insert(SCHEMA_KEY, &99u32.to_be_bytes()).unwrap();
            m.flush().unwrap();
        }
        let e = Manifest::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("schema version 99"), "{e}");
        assert!(e.contains("upgrade lomob"), "{e}");
    }
}

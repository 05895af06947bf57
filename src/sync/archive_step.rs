//! The archive step of a sync: pack what waits into images, oldest first, and put each into
//! the site's archive, verified, before anything is recorded as archived.
//!
//! Every image is written down as pending (its exact members, volume and fingerprint)
//! before its first byte is sent, and marked stored once the server's checksum has verified
//! it. So whatever a kill -9 interrupts, the next run finds the image and:
//! - records it without sending anything, when it was stored and verified;
//! - lays out the very same bytes again and continues the upload (or shows by checksum that
//!   the server already holds them), when every member can still be read;
//! - otherwise abandons it: the unfinished upload is aborted, and an object it cannot verify
//!   is kept on record as unverified (billed, never counted) while its files go into a new
//!   image under a new name.
//!
//! A name is never reused and nothing is overwritten: an object found under a wanted name
//! that is not provably this image's is recorded and the image takes another name. An
//! upload no run will continue (the next run planned differently) is aborted at the end of
//! the step, so nothing is left billing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lomob_backends::{ByteSize, ErrorKind};

use super::changed::{self, Found};
use super::{free, SiteReport, SyncError, SyncOptions, WantedContent};
use crate::archive::{ArchiveObject, ByteSource, PutOutcome, PutRequest, Stored, Verification};
use crate::iso::{IsoError, IsoPlan, VolumeInfo};
use crate::keys::{archive_key, catalog_key, ARCHIVE};
use crate::manifest::{
    self, ContentId, IsoUpload, Manifest, PendingImage, PendingMember, SiteFlag, StoredImage,
    UnverifiedObject, UploadJournalTree,
};
use crate::pack::{self, Candidate};
use crate::site::Site;

/// What the step works on.
pub(super) struct Step<'a> {
    pub m: &'a Arc<Manifest>,
    pub site: &'a Arc<Site>,
    pub opts: &'a SyncOptions,
    /// Make new images (the threshold is reached, or `--pack-now`); interrupted ones are
    /// continued either way.
    pub pack: bool,
}

/// Files to go into one image, with the name and volume of an interrupted image that is
/// being continued (its bytes must come out the same).
struct Group {
    members: Vec<Candidate>,
    fixed: Option<(String, VolumeInfo)>,
}

struct Archiver<'a> {
    step: Step<'a>,
    journal: UploadJournalTree,
    /// Where staged copies are downloaded when an original changed; removed on drop.
    tmp: tempfile::TempDir,
    /// Names this run must not give a new image: recorded, pending or occupied.
    taken: HashSet<String>,
    /// Keys whose upload this run continued or started: their journal entries stay.
    continued: HashSet<String>,
    /// Images go up as parts checked by Content-MD5 (the bucket's single-PUT ETags are not
    /// MD5s).
    multipart_only: bool,
    /// The waiting contents, by id (borrowed: the plan may list a whole library's files).
    by_content: HashMap<ContentId, &'a WantedContent>,
}

/// Packs and archives (see the module header). Contents packed, or found changed and left
/// out, go into `handled`; new versions found on the way (bytes changed without a new
/// mtime) into `new_versions`, to be staged.
pub(super) async fn run<'a>(
    step: Step<'a>,
    waiting: &[&'a WantedContent],
    r: &mut SiteReport,
    handled: &mut HashSet<ContentId>,
    new_versions: &mut Vec<WantedContent>,
) -> super::error::Result<()> {
    let dry_run = step.opts.dry_run;
    let mut a = Archiver::new(step, waiting)?;
    let result = a.archive(waiting, r, handled, new_versions).await;
    if !dry_run {
        // Whatever happened above: an upload no run will continue must not stay billing.
        if let Err(e) = a.abandon_the_rest(r).await {
            if result.is_ok() {
                return Err(e);
            }
            r.fail(&e);
        }
    }
    result
}

impl<'a> Archiver<'a> {
    fn new(step: Step<'a>, waiting: &[&'a WantedContent]) -> super::error::Result<Self> {
        let (m, site) = (step.m, step.site);
        let mut taken: HashSet<String> = m.isos()?.into_iter().map(|i| i.name).collect();
        taken.extend(
            m.unverified(Some(&site.name))?
                .into_iter()
                .filter_map(|(_, o)| o.key.strip_prefix(ARCHIVE).map(str::to_string)),
        );
        taken.extend(m.pending_images(&site.name)?.into_iter().map(|p| p.name));
        let tmp_root = crate::config::data_dir().join("tmp");
        let tmp = std::fs::create_dir_all(&tmp_root)
            .and_then(|()| {
                tempfile::Builder::new()
                    .prefix(&format!("{}-", site.name))
                    .tempdir_in(&tmp_root)
            })
            .map_err(|e| SyncError::local(&tmp_root, e))?;
        Ok(Archiver {
            journal: m.upload_journal(&site.name),
            tmp,
            taken,
            continued: HashSet::new(),
            multipart_only: m.site_flag(&site.name, SiteFlag::MultipartOnly)?,
            by_content: waiting.iter().map(|w| (w.content, *w)).collect(),
            step,
        })
    }

    async fn archive(
        &mut self,
        waiting: &[&WantedContent],
        r: &mut SiteReport,
        handled: &mut HashSet<ContentId>,
        new_versions: &mut Vec<WantedContent>,
    ) -> super::error::Result<()> {
        let (m, site, opts) = (self.step.m, self.step.site, self.step.opts);
        let mut queue: VecDeque<Group> = VecDeque::new();
        if !opts.dry_run {
            for p in m.pending_images(&site.name)? {
                if let Some(g) = self.resume(p, r, handled).await? {
                    queue.push_back(g);
                }
            }
        }
        let queued: HashSet<ContentId> = queue
            .iter()
            .flat_map(|g| g.members.iter().map(|c| c.content))
            .collect();
        let mut rest: VecDeque<Candidate> = VecDeque::new();
        if self.step.pack {
            for w in waiting {
                if queued.contains(&w.content) || handled.contains(&w.content) {
                    continue;
                }
                match self.source_of(w, r).await {
                    Some(source) => rest.push_back(candidate(w, source)),
                    None => {
                        r.skipped_changed += 1;
                        handled.insert(w.content);
                    }
                }
            }
        }
        let iso_size = site.config.iso_size.bytes();
        let mut new_images = 0usize;
        loop {
            let group = match queue.pop_front() {
                Some(g) => g,
                None => {
                    let remaining: u64 = rest.iter().map(|c| c.size).sum();
                    if rest.is_empty() || (!opts.pack_now && remaining < iso_size && new_images > 0)
                    {
                        break;
                    }
                    let taken = &self.taken;
                    let name_of = |g: &[Candidate]| fresh_name(site, g, taken);
                    let volume = |g: &[Candidate]| volume_of(&name_of(g), g);
                    let Some((members, _)) = pack::next_image(&mut rest, iso_size, &volume)? else {
                        break;
                    };
                    new_images += 1;
                    Group {
                        members,
                        fixed: None,
                    }
                }
            };
            if opts.dry_run {
                let name = fresh_name(site, &group.members, &self.taken);
                self.taken.insert(name.clone());
                r.images.push(name);
                r.archived_files += group.members.len() as u64;
                r.archived_bytes += group.members.iter().map(|c| c.size).sum::<u64>();
                handled.extend(group.members.iter().map(|c| c.content));
                continue;
            }
            self.upload(group, r, handled, new_versions).await?;
        }
        Ok(())
    }

    /// Where a waiting content's bytes are read from: its original when unchanged, else its
    /// verified staged copy (downloaded); `None` when neither exists.
    async fn source_of(&self, w: &WantedContent, r: &mut SiteReport) -> Option<PathBuf> {
        if w.unchanged_on_disk() || self.step.opts.dry_run {
            return Some(w.source.clone());
        }
        w.staged.as_ref()?;
        match download_staged(self.step.site, w, self.tmp.path()).await {
            Ok(p) => Some(p),
            Err(e) => {
                r.fail(&e);
                None
            }
        }
    }

    /// An image an earlier run chose and did not record: adopt it, continue it, or abandon
    /// it (see the module header). Returns the group to upload when it is continued.
    async fn resume(
        &mut self,
        p: PendingImage,
        r: &mut SiteReport,
        handled: &mut HashSet<ContentId>,
    ) -> super::error::Result<Option<Group>> {
        let (m, site) = (self.step.m, self.step.site);
        let key = p.key.clone();
        let mut members = Vec::with_capacity(p.members.len());
        let mut all_readable = true;
        for pm in &p.members {
            let source = match self.by_content.get(&pm.content).copied() {
                Some(w) => self.source_of(w, r).await,
                None => None,
            };
            all_readable &= source.is_some();
            members.push(member_candidate(pm, source.unwrap_or_default()));
        }
        let vol = VolumeInfo {
            volume_id: p.volume_id.clone(),
            created: p.created,
        };
        let plan = pack::plan(&members, vol.clone())?;
        let same_layout = hex::encode(plan.fingerprint()) == p.fingerprint;
        let existing = site.archive.stat(&key).await?;
        if let (Some(stored), Some(o)) = (&p.stored, &existing) {
            let same_object = o.info.size == stored.size
                && (o.info.etag.is_none() || stored.etag.is_none() || o.info.etag == stored.etag)
                && o.fingerprint.as_deref().is_none_or(|f| f == p.fingerprint);
            if same_layout && same_object {
                tracing::info!(
                    "site {}: {} was stored and verified by an interrupted run: recording it",
                    site.name,
                    p.name
                );
                let s = Stored {
                    object: o.clone(),
                    sha256: stored.sha256,
                    verification: Verification::ServerChecksum,
                };
                r.adopted_images.push(p.name.clone());
                self.finish(p, &plan, &members, s, r, handled).await?;
                return Ok(None);
            }
        }
        if same_layout && all_readable && p.stored.is_none() {
            // Laid out again byte for byte: the put continues the upload, or shows by
            // checksum that the server already holds it.
            return Ok(Some(Group {
                members,
                fixed: Some((p.name, vol)),
            }));
        }
        if let Some(o) = existing {
            let ours = o.fingerprint.as_deref() == Some(p.fingerprint.as_str());
            self.keep_unverified(
                &o,
                "stored by an interrupted run, but some of its files changed or vanished before it could be verified".into(),
                ours,
                r,
            )?;
        }
        self.abandon(&key, r).await?;
        m.remove_pending(&site.name, &p.name)?;
        Ok(None)
    }

    /// Uploads one group, verified, and records it; leaves out files found changed, and
    /// moves to a new name when the wanted one is occupied.
    async fn upload(
        &mut self,
        group: Group,
        r: &mut SiteReport,
        handled: &mut HashSet<ContentId>,
        new_versions: &mut Vec<WantedContent>,
    ) -> super::error::Result<()> {
        let (m, site) = (self.step.m, self.step.site);
        let Group {
            mut members,
            mut fixed,
        } = group;
        while !members.is_empty() {
            let (name, vol) = fixed.take().unwrap_or_else(|| {
                let name = fresh_name(site, &members, &self.taken);
                let vol = volume_of(&name, &members);
                (name, vol)
            });
            let plan = pack::plan(&members, vol.clone())?;
            let pending = pending_record(&site.name, &name, &vol, &plan, &members);
            m.put_pending(&pending)?;
            self.ensure_seal(&pending.key, r).await?;
            self.taken.insert(name.clone());
            self.continued.insert(pending.key.clone());
            let put = self.put(&pending, &plan, members.len()).await;
            match put {
                Ok(PutOutcome::Stored(s)) => {
                    if let Verification::Unverified(reason) = &s.verification {
                        self.keep_unverified(&s.object, reason.clone(), true, r)?;
                        m.remove_pending(&site.name, &name)?;
                        if self.multipart_only {
                            return Err(SyncError::found(
                                ErrorKind::Integrity,
                                format!(
                                    "site {}: {name} could not be verified even as parts checked one by one: {reason}",
                                    site.name
                                ),
                            ));
                        }
                        self.multipart_only = true;
                        m.set_site_flag(&site.name, SiteFlag::MultipartOnly)?;
                        continue;
                    }
                    self.finish(pending, &plan, &members, s, r, handled).await?;
                    return Ok(());
                }
                Ok(PutOutcome::Occupied { existing, reason }) => {
                    let ours =
                        existing.fingerprint.as_deref() == Some(pending.fingerprint.as_str());
                    tracing::warn!(
                        "site {}: {} already holds an object that is not this image ({reason}); using another name",
                        site.name,
                        pending.key
                    );
                    self.keep_unverified(&existing, reason, ours, r)?;
                    self.abandon(&pending.key, r).await?;
                    m.remove_pending(&site.name, &name)?;
                    m.remove_image_seal(&site.name, &pending.key)?;
                }
                Err(e) => {
                    let Some(i) = culprit(&e, &members) else {
                        return Err(e.into());
                    };
                    // A file changed (or vanished) under the image: the upload stopped
                    // before it completed and nothing was stored. Its seal goes too: other
                    // bytes are never encrypted with the key stream already sent.
                    m.remove_pending(&site.name, &name)?;
                    m.remove_image_seal(&site.name, &pending.key)?;
                    self.taken.remove(&name);
                    if let Some(c) = self.changed(&mut members[i], r, new_versions).await? {
                        members.remove(i);
                        handled.insert(c);
                    }
                }
            }
        }
        Ok(())
    }

    /// A member whose bytes were not the recorded ones. Returns its content when it must
    /// leave the image; keeps it (reading its verified staged copy instead) when it can.
    async fn changed(
        &self,
        c: &mut Candidate,
        r: &mut SiteReport,
        new_versions: &mut Vec<WantedContent>,
    ) -> super::error::Result<Option<ContentId>> {
        let site = self.step.site;
        tracing::warn!(
            "site {}: {} changed since the scan",
            site.name,
            c.source.display()
        );
        let Some(w) = self.by_content.get(&c.content) else {
            r.skipped_changed += 1;
            return Ok(Some(c.content));
        };
        let from_original = c.source == w.source;
        if from_original {
            match changed::examine(self.step.m, w, r)? {
                Found::Silent(nw) => new_versions.push(*nw),
                Found::Edited | Found::Unchanged | Found::Gone => r.skipped_changed += 1,
            }
        }
        if from_original && w.staged.is_some() {
            // The staged copy still holds the recorded bytes: archive those.
            if let Ok(p) = download_staged(site, w, self.tmp.path()).await {
                c.source = p;
                return Ok(None);
            }
        }
        Ok(Some(c.content))
    }

    /// Makes sure the upload of `key` continues with the ciphertext it started with: on an
    /// encrypted site, the recorded seal when this machine can regenerate its bytes, else a
    /// new one (and the journaled upload, sealed otherwise, is abandoned); on a plain site,
    /// an upload begun encrypted is abandoned. Two ciphertexts never meet in one object.
    async fn ensure_seal(&mut self, key: &str, r: &mut SiteReport) -> super::error::Result<()> {
        let (m, site) = (self.step.m, self.step.site);
        let recorded = m.image_seal(&site.name, key)?;
        match (&site.crypt, recorded) {
            (None, None) => {}
            (None, Some(_)) => {
                self.abandon(key, r).await?;
                m.remove_image_seal(&site.name, key)?;
            }
            (Some(c), recorded) => {
                let usable = recorded.as_ref().is_some_and(|seal| c.owns_seal(seal));
                if !usable {
                    if recorded.is_some() {
                        tracing::warn!(
                            "site {}: {key} was begun with keys this machine no longer has; starting its upload anew",
                            site.name
                        );
                    }
                    self.abandon(key, r).await?;
                    m.put_image_seal(&site.name, key, &c.new_image_seal())?;
                }
            }
        }
        Ok(())
    }

    /// Sends the pending image.
    async fn put(
        &self,
        pending: &PendingImage,
        plan: &IsoPlan,
        files: usize,
    ) -> Result<PutOutcome, crate::store::StoreError> {
        let (site, opts) = (self.step.site, self.step.opts);
        tracing::info!(
            "site {}: archiving {} ({}, {files} files)",
            site.name,
            pending.name,
            ByteSize(plan.image_size()),
        );
        let bar = crate::progress::Progress::with_total(
            &format!("{} archive", site.name),
            opts.progress,
            plan.image_size(),
        );
        let last = AtomicU64::new(0);
        // Files count as they enter the image: when the bytes written pass their end.
        let mut ends: Vec<u64> = plan
            .placements()
            .iter()
            .map(|p| p.offset + p.size)
            .collect();
        ends.sort_unstable();
        let files_in = AtomicU64::new(0);
        let image: Arc<dyn ByteSource> = Arc::new(ImageSource(plan.clone()));
        let (source, head_len): (Arc<dyn ByteSource>, u64) = match &site.crypt {
            None => (image, 0),
            Some(c) => {
                let seal = self
                    .step
                    .m
                    .image_seal(&site.name, &pending.key)
                    .ok()
                    .flatten()
                    .and_then(|seal| c.seal_image(&seal, image))
                    .ok_or_else(|| {
                        crate::store::StoreError::check(
                            site.archive.info(),
                            "put",
                            &pending.key,
                            "the image's encryption seal is missing from the manifest".into(),
                        )
                    })?;
                let head = seal.head_len();
                (Arc::new(seal), head)
            }
        };
        // Progress counts plaintext bytes: a chunk of 65552 sealed bytes holds 65536.
        let plain = |done: u64| {
            if head_len == 0 {
                done
            } else {
                done.saturating_sub(head_len) / (crate::crypt::CHUNK + 16) * crate::crypt::CHUNK
            }
        };
        let put = site
            .archive
            .put(PutRequest {
                key: &pending.key,
                source,
                fingerprint: &pending.fingerprint,
                multipart_only: self.multipart_only,
                journal: &self.journal,
                progress: &|done| {
                    let done = plain(done);
                    let before = last.swap(done, Ordering::Relaxed);
                    let now_in = ends.partition_point(|&e| e <= done) as u64;
                    let was_in = files_in.swap(now_in, Ordering::Relaxed);
                    bar.add(now_in.saturating_sub(was_in), done.saturating_sub(before));
                },
            })
            .await;
        bar.finish();
        put
    }

    /// The image is on the archive, verified: mark it stored (so a kill from here on is
    /// adopted by the next run), write its catalog beside it, record it and its files, and
    /// free their staged copies.
    async fn finish(
        &mut self,
        mut pending: PendingImage,
        plan: &IsoPlan,
        members: &[Candidate],
        stored: Stored,
        r: &mut SiteReport,
        handled: &mut HashSet<ContentId>,
    ) -> super::error::Result<()> {
        let (m, site) = (self.step.m, self.step.site);
        pending.stored = Some(StoredImage {
            size: stored.object.info.size,
            sha256: stored.sha256,
            etag: stored.object.info.etag.clone(),
            at: manifest::now(),
        });
        m.put_pending(&pending)?;
        // The catalog beside the image, kept hot: the archive describes itself, readable
        // without a thaw and without the database.
        // On an encrypted site it is sealed here, once, like the image: deterministically
        // from its name and bytes, so a retried write is recognised as the same object.
        let catalog = catalog_key(&pending.key);
        let stored_catalog = match &site.crypt {
            Some(c) => c.seal_index(&catalog, plan.catalog_bytes()),
            None => plan.catalog_bytes().to_vec(),
        };
        match site
            .archive
            .put_index(&catalog, stored_catalog.clone())
            .await?
        {
            PutOutcome::Stored(_) => {}
            PutOutcome::Occupied { existing, reason } => {
                // The image is verified; only its catalog's name is taken. The manifest
                // (and its snapshots) still describe the image.
                r.fail_with(
                    ErrorKind::Integrity,
                    format!(
                        "site {}: the catalog of {} could not be written: {catalog} holds another object ({reason})",
                        site.name, pending.name
                    ),
                );
                self.keep_unverified(&existing, reason, false, r)?;
            }
        }
        let upload = IsoUpload {
            site: site.name.clone(),
            region: site.archive_region(),
            bucket: site.archive.info().location.clone(),
            key: pending.key.clone(),
            at: manifest::now(),
        };
        pack::record_image(
            m,
            &pack::ImageToRecord {
                name: &pending.name,
                group: members,
                plan,
                size: stored.object.info.size,
                sha256: stored.sha256,
                local_path: None,
                upload: Some(upload),
            },
        )?;
        // The baseline holds the catalog as stored.
        m.put_image_object(
            &site.name,
            &pending.name,
            &image_object(&pending, &stored, &stored_catalog),
        )?;
        m.remove_pending(&site.name, &pending.name)?;
        m.remove_image_seal(&site.name, &pending.key)?;
        handled.extend(members.iter().map(|c| c.content));
        self.taken.insert(pending.name.clone());
        r.images.push(pending.name);
        r.archived_files += members.len() as u64;
        r.archived_bytes += members.iter().map(|c| c.size).sum::<u64>();
        let staged: HashMap<ContentId, _> = m
            .staged(Some(&site.name))?
            .into_iter()
            .map(|(_, c, s)| (c, s))
            .collect();
        let copies = members
            .iter()
            .filter_map(|c| staged.get(&c.content).map(|s| (c.content, s.clone())))
            .collect();
        free::free_archived(m, site, copies, r).await
    }

    /// Keeps an archive object lomob will not count on record (it is billed).
    fn keep_unverified(
        &mut self,
        o: &ArchiveObject,
        reason: String,
        ours: bool,
        r: &mut SiteReport,
    ) -> super::error::Result<()> {
        tracing::warn!(
            "site {}: {} is not counted as archived: {reason}",
            self.step.site.name,
            o.info.key
        );
        self.step.m.put_unverified(
            &self.step.site.name,
            &UnverifiedObject {
                key: o.info.key.clone(),
                size: o.info.size,
                storage_class: o.storage_class.clone(),
                modified: o.info.modified,
                reason,
                ours,
                found: manifest::now(),
            },
        )?;
        if let Some(name) = o.info.key.strip_prefix(ARCHIVE) {
            self.taken.insert(name.to_string());
        }
        r.unverified_objects.push(o.info.key.clone());
        Ok(())
    }

    /// Aborts the journaled upload of `key`, if there is one.
    async fn abandon(&mut self, key: &str, r: &mut SiteReport) -> super::error::Result<()> {
        use crate::archive::UploadJournal as _;
        if self.journal.load(key)?.is_some() {
            self.step
                .site
                .archive
                .abort_upload(key, &self.journal)
                .await?;
            r.uploads_abandoned += 1;
        }
        self.continued.remove(key);
        Ok(())
    }

    /// Aborts every journaled upload this run neither continued nor keeps pending.
    async fn abandon_the_rest(&mut self, r: &mut SiteReport) -> super::error::Result<()> {
        use crate::archive::UploadJournal as _;
        let (m, site) = (self.step.m, self.step.site);
        let pending: HashSet<String> = m
            .pending_images(&site.name)?
            .into_iter()
            .map(|p| p.key)
            .collect();
        for state in self.journal.list()? {
            if !self.continued.contains(&state.key) && !pending.contains(&state.key) {
                site.archive.abort_upload(&state.key, &self.journal).await?;
                r.uploads_abandoned += 1;
            }
        }
        Ok(())
    }
}

/// The plan's image as a [`ByteSource`] for the uploader.
struct ImageSource(IsoPlan);

impl ByteSource for ImageSource {
    fn len(&self) -> u64 {
        self.0.image_size()
    }

    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(self.0.reader_at(offset)))
    }
}

/// The baseline a check compares the archived image with.
fn image_object(
    pending: &PendingImage,
    stored: &Stored,
    catalog: &[u8],
) -> crate::manifest::ImageObject {
    use md5::Digest as _;
    crate::manifest::ImageObject {
        key: pending.key.clone(),
        size: stored.object.info.size,
        etag: stored.object.info.etag.clone(),
        fingerprint: stored
            .object
            .fingerprint
            .clone()
            .or_else(|| Some(pending.fingerprint.clone())),
        storage_class: stored.object.storage_class.clone(),
        catalog_size: catalog.len() as u64,
        catalog_md5: hex::encode(md5::Md5::digest(catalog)),
        catalog_sha256: hex::encode(sha2::Sha256::digest(catalog)),
        at: manifest::now(),
        baseline: false,
    }
}

fn candidate(w: &WantedContent, source: PathBuf) -> Candidate {
    Candidate {
        content: w.content,
        image_path: w.image_path.clone(),
        source,
        size: w.size,
        mtime: w.mtime,
        mode: w.mode,
        sha256: w.sha256,
    }
}

fn member_candidate(pm: &PendingMember, source: PathBuf) -> Candidate {
    Candidate {
        content: pm.content,
        image_path: pm.image_path.clone(),
        source,
        size: pm.size,
        mtime: pm.mtime,
        mode: pm.mode,
        sha256: pm.sha256,
    }
}

/// A new image name for `group` on `site`: `<site>-<oldest>--<newest>.iso`, or on an
/// encrypted site `<site>-<16 keyed hex digits>.iso` (no dates), made unique.
fn fresh_name(site: &Site, group: &[Candidate], taken: &HashSet<String>) -> String {
    let name = match &site.crypt {
        Some(c) => format!(
            "{}-{}.iso",
            site.name,
            c.image_stem(group.iter().map(|c| &c.content))
        ),
        None => format!("{}-{}", site.name, pack::default_name(group)),
    };
    pack::unique_name(&name, &|n| taken.contains(n))
}

/// The volume of an image. Nothing in it may depend on the clock, so that an interrupted
/// upload is continued into the same bytes: its creation time is its newest file's.
fn volume_of(name: &str, group: &[Candidate]) -> VolumeInfo {
    VolumeInfo {
        volume_id: name.trim_end_matches(".iso").to_string(),
        created: group.iter().map(|c| c.mtime).max().unwrap_or(0),
    }
}

fn pending_record(
    site: &str,
    name: &str,
    vol: &VolumeInfo,
    plan: &IsoPlan,
    members: &[Candidate],
) -> PendingImage {
    PendingImage {
        site: site.to_string(),
        name: name.to_string(),
        key: archive_key(name),
        fingerprint: hex::encode(plan.fingerprint()),
        volume_id: vol.volume_id.clone(),
        created: vol.created,
        members: members
            .iter()
            .map(|c| PendingMember {
                content: c.content,
                image_path: c.image_path.clone(),
                size: c.size,
                mtime: c.mtime,
                mode: c.mode,
                sha256: c.sha256,
            })
            .collect(),
        started: manifest::now(),
        stored: None,
    }
}

/// The member whose read failed the upload: a file that changed since the scan, vanished,
/// or cannot be read. The plan was made from `members` in order, so the image error's input
/// index is the member's.
fn culprit(e: &crate::store::StoreError, members: &[Candidate]) -> Option<usize> {
    IsoError::from_io(e.source_io()?)?
        .failed_input()
        .filter(|&i| i < members.len())
}

/// Downloads a staged copy to use in an image instead of a local original that changed,
/// streaming it to a temporary file (a staged video may be larger than memory), and checks
/// it against the recorded SHA-256.
async fn download_staged(
    site: &Site,
    w: &WantedContent,
    tmp: &std::path::Path,
) -> super::error::Result<PathBuf> {
    let s = w.staged.as_ref().ok_or_else(|| {
        SyncError::found(
            ErrorKind::Other,
            format!("{} has no staged copy", w.source.display()),
        )
    })?;
    let p = tmp.join(hex::encode(w.content));
    let (got, len) = site.stage.download(&s.key, &p).await?;
    if got != w.sha256 || len != w.size {
        let _ = std::fs::remove_file(&p);
        return Err(SyncError::found(
            ErrorKind::Integrity,
            format!(
                "site {}: the staged copy {} of {} does not match its recorded size and SHA-256, and the original has changed since: this version cannot be archived (the current one is backed up after the next scan)",
                site.name,
                s.key,
                w.source.display()
            ),
        ));
    }
    Ok(p)
}

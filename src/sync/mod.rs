//! The two-stage backup of one site: stage what is not safe there yet, pack staged files into
//! images when enough has gathered, archive and verify the images, free the staged copies,
//! and leave a manifest snapshot on the site.
//!
//! Every site packs its own images: thresholds, image sizes and timing differ per site, and
//! one site failing must never hold another back. State is recorded per site (`staged`,
//! `archived`) as each step is verified, so a run killed at any point continues where it
//! stopped: staged objects are not sent again, and an interrupted archive upload resumes
//! from its journal.

mod plan;
mod snapshot;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use lomob_backends::ByteSize;
use serde::Serialize;

use crate::archive::ByteSource;
use crate::iso::{IsoError, IsoPlan, VolumeInfo};
use crate::keys::{archive_key, stage_key};
use crate::manifest::{
    self, ArchivedRecord, ContentId, IsoRecord, IsoStatus, IsoUpload, Manifest, ManifestBatch,
    PlacementRecord, StagedRecord,
};
use crate::pack::{self, Candidate};
use crate::site::Site;
use crate::store::RequestCounts;

pub use plan::{pending, Pending, WantedContent};

/// How a sync runs.
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// Pack everything staged now, whatever the threshold (a last image may be small).
    pub pack_now: bool,
    /// Report what would be done, with its requests and cost, and do nothing.
    pub dry_run: bool,
    /// Draw progress bars on a terminal.
    pub progress: bool,
}

/// What one site's sync did (or, on a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteReport {
    pub site: String,
    pub dry_run: bool,
    pub staged_files: u64,
    pub staged_bytes: u64,
    /// Files found changed since the scan; skipped until the next scan records them.
    pub skipped_changed: u64,
    /// Files too big for this stage, waiting for the next image.
    pub direct_files: u64,
    pub images: Vec<String>,
    pub archived_files: u64,
    pub archived_bytes: u64,
    pub freed_files: u64,
    pub freed_bytes: u64,
    /// Still staged (not yet in an image) after the run.
    pub pending_bytes: u64,
    /// Staged copies removed under `stage-retention-days` (gone locally for that long).
    pub expired_files: u64,
    pub expired_bytes: u64,
    pub orphans_aborted: u64,
    pub requests: RequestCounts,
    pub errors: Vec<String>,
    pub ok: bool,
}

impl SiteReport {
    fn fail(&mut self, e: impl std::fmt::Display) {
        self.errors.push(e.to_string());
        self.ok = false;
    }
}

/// After this many failed uploads in a row the server is taken as down for this run.
const MAX_CONSECUTIVE_FAILURES: usize = 5;

/// Runs the sync of one site. Errors are reported in the result, never raised, so a
/// failing site does not stop the others.
pub async fn sync_site(m: Arc<Manifest>, site: Arc<Site>, opts: SyncOptions) -> SiteReport {
    let started = manifest::now();
    let mut r = SiteReport {
        site: site.name.clone(),
        dry_run: opts.dry_run,
        ok: true,
        ..Default::default()
    };
    if let Err(e) = run(&m, &site, &opts, &mut r).await {
        r.fail(format!("{e:#}"));
    }
    r.requests = site.requests();
    if !opts.dry_run {
        let _ = record_run(&m, &r, started);
    }
    r
}

async fn run(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    opts: &SyncOptions,
    r: &mut SiteReport,
) -> anyhow::Result<()> {
    let journal = m.upload_journal(&site.name);
    if !opts.dry_run {
        r.orphans_aborted = site.archive.abort_orphans("", &journal).await? as u64;
    }
    let p = pending(m, &site.name, &site.config)?;
    r.direct_files = p.direct.len() as u64;
    if opts.dry_run {
        r.expired_files = p.expired.len() as u64;
        r.expired_bytes = p.expired.iter().map(|w| w.size).sum();
    } else {
        expire_staged(m, site, &p.expired, r).await?;
    }

    // Everything waiting for an image: staged copies, files too big for the stage, and files
    // not staged yet. When this run packs, the files that fill its images go from their
    // originals straight into the archive: staging them first would send them twice and
    // read them once more, only to delete the staged copies minutes later.
    let mut waiting: Vec<&WantedContent> = p
        .staged_unarchived
        .iter()
        .chain(p.direct.iter())
        .chain(p.to_stage.iter())
        .collect();
    waiting.sort_by(|a, b| {
        a.mtime
            .cmp(&b.mtime)
            .then_with(|| a.image_path.cmp(&b.image_path))
    });
    let waiting_bytes: u64 = waiting.iter().map(|w| w.size).sum();
    let threshold = site.config.pack_threshold.bytes();
    let mut handled: HashSet<ContentId> = HashSet::new();
    let mut archive_failed = None;
    if opts.pack_now || waiting_bytes >= threshold {
        if let Err(e) = archive_all(m, site, &journal, &waiting, opts, r, &mut handled).await {
            archive_failed = Some(e);
        }
    } else if !waiting.is_empty() {
        tracing::info!(
            "site {}: {} waiting, packing at {}",
            site.name,
            ByteSize(waiting_bytes),
            site.config.pack_threshold
        );
    }

    // Stage what no image took: the remainder below a full image, or everything when this
    // run did not pack or packing failed, so nothing is left unsafe for longer than a run.
    let to_stage: Vec<WantedContent> = p
        .to_stage
        .iter()
        .filter(|w| !handled.contains(&w.content))
        .cloned()
        .collect();
    if opts.dry_run {
        r.staged_files = to_stage.len() as u64;
        r.staged_bytes = to_stage.iter().map(|w| w.size).sum();
    } else if !to_stage.is_empty() {
        if let Err(e) = stage_all(m, site, &to_stage, opts, r).await {
            if let Some(a) = archive_failed {
                r.fail(format!("{a:#}"));
            }
            return Err(e);
        }
    }

    r.pending_bytes = if opts.dry_run {
        waiting_bytes.saturating_sub(r.archived_bytes)
    } else {
        let p = pending(m, &site.name, &site.config)?;
        p.staged_unarchived
            .iter()
            .chain(p.direct.iter())
            .map(|w| w.size)
            .sum()
    };

    if !opts.dry_run {
        snapshot::upload(m, site).await?;
    }
    match archive_failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn stage_all(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    todo: &[WantedContent],
    opts: &SyncOptions,
    r: &mut SiteReport,
) -> anyhow::Result<()> {
    let bar = crate::progress::Progress::with_total(
        &format!("{} stage", site.name),
        opts.progress,
        todo.iter().map(|w| w.size).sum(),
    );
    let concurrency = site.config.transfer.concurrency.clamp(1, 16);
    let mut results = futures::stream::iter(todo.iter().cloned())
        .map(|w| {
            let site = site.clone();
            async move {
                if !w.unchanged_on_disk() {
                    return (w, Err(None));
                }
                let key = stage_key(&w.content);
                let res = site
                    .stage
                    .put_file(&key, &w.source, w.size, &w.sha256)
                    .await;
                (w, res.map_err(Some))
            }
        })
        .buffer_unordered(concurrency);
    let mut batch = ManifestBatch::default();
    let mut consecutive = 0usize;
    let mut last_flush = std::time::Instant::now();
    while let Some((w, res)) = results.next().await {
        match res {
            Ok(obj) => {
                consecutive = 0;
                bar.add(1, w.size);
                r.staged_files += 1;
                r.staged_bytes += w.size;
                batch.put_staged(
                    &site.name,
                    &w.content,
                    &StagedRecord {
                        key: obj.key,
                        size: obj.size,
                        etag: obj.etag,
                        at: manifest::now(),
                    },
                );
                // Recorded at once, made durable every second: a kill -9 costs at most a
                // second of uploads, sent again under the same content-derived names.
                m.apply(std::mem::take(&mut batch))?;
                if last_flush.elapsed() >= std::time::Duration::from_secs(1) {
                    m.flush()?;
                    last_flush = std::time::Instant::now();
                }
            }
            Err(None) => r.skipped_changed += 1,
            Err(Some(e)) => {
                let transient = e.is_transient();
                r.fail(&e);
                consecutive += 1;
                if consecutive >= MAX_CONSECUTIVE_FAILURES {
                    m.apply(std::mem::take(&mut batch))?;
                    m.flush()?;
                    anyhow::bail!(
                        "site {}: {} uploads failed in a row{}; stopping this site (the next run continues)",
                        site.name,
                        consecutive,
                        if transient { " (the server looks unreachable)" } else { "" }
                    );
                }
            }
        }
    }
    m.apply(batch)?;
    m.flush()?;
    Ok(())
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

/// Packs `waiting` (oldest first) into images and archives them: at least one image, then
/// as many full ones as there are, or everything with `--pack-now`. Each image streams from
/// the local originals (or, for an original that changed, its verified staged copy) straight
/// into the archive upload, and every file is checked against its SHA-256 as it streams: a
/// file that changed since the scan fails the upload before it completes, and the image is
/// planned again without it. Contents packed or found changed go into `handled`.
async fn archive_all(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    journal: &manifest::UploadJournalTree,
    waiting: &[&WantedContent],
    opts: &SyncOptions,
    r: &mut SiteReport,
    handled: &mut HashSet<ContentId>,
) -> anyhow::Result<()> {
    let iso_size = site.config.iso_size.bytes();
    let tmp = TempDir(tempdir_for(site)?);
    let tmp = tmp.0.as_path();
    // Each content from its local original when that is unchanged, else from its staged
    // copy (downloaded), never a wrong version.
    let mut rest: VecDeque<Candidate> = VecDeque::new();
    for w in waiting {
        let source = if w.unchanged_on_disk() {
            w.source.clone()
        } else if w.staged.is_some() && !opts.dry_run {
            match download_staged(site, w, tmp).await {
                Ok(p) => p,
                Err(e) => {
                    r.fail(e);
                    continue;
                }
            }
        } else if opts.dry_run {
            w.source.clone()
        } else {
            // Changed since the scan and never staged: the next scan records the new bytes.
            r.skipped_changed += 1;
            handled.insert(w.content);
            continue;
        };
        rest.push_back(Candidate {
            content: w.content,
            image_path: w.image_path.clone(),
            source,
            size: w.size,
            mtime: w.mtime,
            mode: w.mode,
            sha256: w.sha256,
        });
    }
    let mut taken: Vec<String> = m.isos()?.into_iter().map(|i| i.name).collect();
    // The image must come out byte-identical when a killed run is resumed, so nothing in it
    // may depend on the clock: its creation time is its newest file's.
    let created_of = |g: &[Candidate]| g.iter().map(|c| c.mtime).max().unwrap_or(0);
    loop {
        let remaining: u64 = rest.iter().map(|c| c.size).sum();
        if rest.is_empty() || (!opts.pack_now && remaining < iso_size && !r.images.is_empty()) {
            break;
        }
        let name_for = |g: &[Candidate], taken: &[String]| {
            pack::unique_name(&format!("{}-{}", site.name, pack::default_name(g)), &|n| {
                taken.iter().any(|t| t == n)
            })
        };
        let vol = |g: &[Candidate]| VolumeInfo {
            volume_id: name_for(g, &taken).trim_end_matches(".iso").to_string(),
            created: created_of(g),
        };
        let Some((mut group, mut plan)) = pack::next_image(&mut rest, iso_size, &vol)? else {
            break;
        };
        if opts.dry_run {
            r.images.push(name_for(&group, &taken));
            taken.push(r.images.last().cloned().unwrap_or_default());
            r.archived_files += group.len() as u64;
            r.archived_bytes += group.iter().map(|c| c.size).sum::<u64>();
            handled.extend(group.iter().map(|c| c.content));
            continue;
        }
        let uploaded = loop {
            let name = name_for(&group, &taken);
            let key = archive_key(&name);
            tracing::info!(
                "site {}: archiving {name} ({}, {} files)",
                site.name,
                ByteSize(plan.image_size()),
                group.len()
            );
            let source: Arc<dyn ByteSource> = Arc::new(ImageSource(plan.clone()));
            let bar = crate::progress::Progress::with_total(
                &format!("{} archive", site.name),
                opts.progress,
                plan.image_size(),
            );
            let last = std::sync::atomic::AtomicU64::new(0);
            let put = site
                .archive
                .put(
                    &key,
                    source,
                    &hex::encode(plan.fingerprint()),
                    journal,
                    &|done| {
                        let before = last.swap(done, std::sync::atomic::Ordering::Relaxed);
                        bar.add(0, done.saturating_sub(before));
                    },
                )
                .await;
            bar.finish();
            let e = match put {
                Ok(stored) => break Some((name, key, stored)),
                Err(e) => e,
            };
            // A file that changed (or vanished) since the scan stopped the upload before it
            // completed: nothing was stored. Leave the file out and send the image again.
            let culprit = e
                .source_io()
                .and_then(IsoError::from_io)
                .and_then(|ie| match ie {
                    IsoError::SourceChanged { path, .. } => group
                        .iter()
                        .position(|c| String::from_utf8_lossy(&c.image_path) == *path),
                    IsoError::Io { path, .. } => group.iter().position(|c| c.source == *path),
                    _ => None,
                });
            let Some(i) = culprit else {
                return Err(e.into());
            };
            let c = group.remove(i);
            tracing::warn!(
                "site {}: {} changed since the scan; left out of this image",
                site.name,
                c.source.display()
            );
            r.skipped_changed += 1;
            handled.insert(c.content);
            if group.is_empty() {
                break None;
            }
            plan = pack::plan(&group, vol(&group))?;
        };
        let Some((name, key, stored)) = uploaded else {
            continue;
        };
        // The catalog beside the image, kept hot: the archive describes itself, readable
        // without a thaw and without the database.
        site.archive
            .put_index(
                &format!("{key}.catalog.json"),
                plan.catalog_bytes().to_vec(),
            )
            .await?;
        // Verified: record, then free the staged copies.
        let now = manifest::now();
        let mut iso = IsoRecord {
            id: 0,
            name: name.clone(),
            size: stored.object.info.size,
            sha256: stored.sha256,
            files: group.len() as u64,
            data_bytes: group.iter().map(|c| c.size).sum(),
            created: manifest::now(),
            status: IsoStatus::Uploaded,
            local_path: None,
            uploads: vec![IsoUpload {
                site: site.name.clone(),
                region: region_of(site),
                bucket: site.archive.info().location.clone(),
                key: key.clone(),
                at: now,
            }],
        };
        let iso_id = m.put_iso(&mut iso)?;
        let offsets: HashMap<&[u8], u64> = plan
            .placements()
            .iter()
            .map(|p| (p.path.as_slice(), p.offset))
            .collect();
        let mut batch = ManifestBatch::default();
        for c in &group {
            batch.put_placement(
                &c.content,
                iso_id,
                &PlacementRecord {
                    offset: offsets.get(c.image_path.as_slice()).copied().unwrap_or(0),
                    path: c.image_path.clone(),
                },
            );
            batch.put_archived(
                &site.name,
                &c.content,
                &ArchivedRecord {
                    iso: iso_id,
                    at: now,
                },
            );
        }
        m.apply(batch)?;
        m.flush()?;
        handled.extend(group.iter().map(|c| c.content));
        taken.push(name.clone());
        r.images.push(name);
        r.archived_files += group.len() as u64;
        r.archived_bytes += group.iter().map(|c| c.size).sum::<u64>();
        free_staged(m, site, &group, r).await?;
    }
    Ok(())
}

/// A folder removed when dropped, whichever way the function using it returns.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn region_of(site: &Site) -> String {
    match &site.config.archive {
        lomob_backends::BackendConfig::S3(c) | lomob_backends::BackendConfig::Glacier(c) => {
            c.region.clone()
        }
        _ => String::new(),
    }
}

async fn free_staged(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    group: &[Candidate],
    r: &mut SiteReport,
) -> anyhow::Result<()> {
    let mut staged: HashMap<ContentId, StagedRecord> = m
        .staged(Some(&site.name))?
        .into_iter()
        .map(|(_, c, rec)| (c, rec))
        .collect();
    let copies = group
        .iter()
        .filter_map(|c| staged.remove_entry(&c.content))
        .collect();
    // Copies that fail to go are still archived; a later run frees them.
    for (_, s) in remove_staged(m, site, copies).await? {
        r.freed_files += 1;
        r.freed_bytes += s.size;
    }
    Ok(())
}

/// Deletes staged copies and forgets them in the manifest; returns those deleted. A copy
/// that fails to go stays recorded (with a warning), so a later run tries again.
async fn remove_staged(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    copies: Vec<(ContentId, StagedRecord)>,
) -> anyhow::Result<Vec<(ContentId, StagedRecord)>> {
    let mut batch = ManifestBatch::default();
    let mut removed = Vec::new();
    for (content, s) in copies {
        match site.stage.delete(&s.key).await {
            Ok(()) => {
                batch.remove_staged(&site.name, &content);
                removed.push((content, s));
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    m.apply(batch)?;
    m.flush()?;
    Ok(removed)
}

/// Removes staged copies past the site's `stage-retention-days` (their content has not
/// existed locally for that long); they will not be archived.
async fn expire_staged(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    expired: &[WantedContent],
    r: &mut SiteReport,
) -> anyhow::Result<()> {
    let copies = expired
        .iter()
        .filter_map(|w| w.staged.clone().map(|s| (w.content, s)))
        .collect();
    for (_, s) in remove_staged(m, site, copies).await? {
        tracing::info!(
            "site {}: staged copy {} removed: its content has been gone locally for over {} days",
            site.name,
            s.key,
            site.config.stage_retention_days.unwrap_or(0),
        );
        r.expired_files += 1;
        r.expired_bytes += s.size;
    }
    Ok(())
}

fn tempdir_for(site: &Site) -> anyhow::Result<PathBuf> {
    let dir =
        crate::config::data_dir()
            .join("tmp")
            .join(format!("{}-{}", site.name, std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Downloads a staged copy to use in an image instead of a local original that changed,
/// streaming it to a temporary file (a staged video may be larger than memory), and checks
/// it against the recorded SHA-256.
async fn download_staged(
    site: &Site,
    w: &WantedContent,
    tmp: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    let s = w.staged.as_ref().expect("caller checked");
    let p = tmp.join(hex::encode(w.content));
    let (got, len) = site.stage.download(&s.key, &p).await?;
    if got != w.sha256 || len != w.size {
        let _ = std::fs::remove_file(&p);
        anyhow::bail!(
            "site {}: the staged copy {} of {} does not match its recorded size and SHA-256, and the original has changed since: this version cannot be archived (the current one is backed up after the next scan)",
            site.name,
            s.key,
            w.source.display()
        );
    }
    Ok(p)
}

fn record_run(m: &Manifest, r: &SiteReport, started: i64) -> anyhow::Result<()> {
    let counts = [
        ("staged_files", r.staged_files),
        ("staged_bytes", r.staged_bytes),
        ("archived_files", r.archived_files),
        ("archived_bytes", r.archived_bytes),
        ("images", r.images.len() as u64),
        ("freed_files", r.freed_files),
        ("expired_files", r.expired_files),
        ("skipped_changed", r.skipped_changed),
        ("requests_put", r.requests.put),
        ("requests_post", r.requests.post),
        ("requests_get", r.requests.get),
        ("requests_head", r.requests.head),
        ("requests_list", r.requests.list),
        ("requests_delete", r.requests.delete),
        ("errors", r.errors.len() as u64),
    ];
    m.add_run(&manifest::RunRecord {
        command: format!("sync:{}", r.site),
        started,
        ended: manifest::now(),
        counts: counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        errors: r.errors.iter().take(100).cloned().collect(),
        ok: r.ok,
    })?;
    m.flush()?;
    Ok(())
}

/// True when the file at `path` still has the size and mtime recorded for it.
pub(crate) fn unchanged(path: &std::path::Path, size: u64, mtime_ns: i64) -> bool {
    std::fs::symlink_metadata(path)
        .map(|md| md.is_file() && md.len() == size && crate::scan::walk::mtime_ns(&md) == mtime_ns)
        .unwrap_or(false)
}

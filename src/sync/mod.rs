//! The two-stage backup of one site: stage what is not safe there yet, pack staged files into
//! images when enough has gathered, archive and verify the images, free the staged copies,
//! and leave a manifest snapshot on the site.
//!
//! Every site packs its own images: thresholds, image sizes and timing differ per site, and
//! one site failing must never hold another back. State is recorded per site (`staged`,
//! `archived`) as each step is verified, so a run killed at any point continues where it
//! stopped: staged objects are not sent again, an image being uploaded is continued (or, if
//! the server already holds it, adopted), and what no run will continue is cleaned up.
//!
//! One file per step: [`plan`] (what the site needs, from the manifest alone),
//! [`archive_step`], [`stage_step`], [`free`] (staged copies no longer needed), [`changed`]
//! (a file found changed under the sync), [`snapshot`] and [`mark`] (the site's claim on its
//! key space).

mod archive_step;
pub(crate) mod changed;
pub mod error;
mod free;
pub mod mark;
mod plan;
pub(crate) mod snapshot;
mod stage_step;

use std::collections::HashSet;
use std::sync::Arc;

use lomob_backends::{ByteSize, ErrorKind};
use serde::Serialize;

use crate::manifest::{self, ContentId, Manifest};
use crate::site::Site;
use crate::store::RequestCounts;

pub use error::SyncError;
pub use plan::{pending, Detail, Pending, WantedContent};

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

/// A file named in a report, with when something was found about it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FileEvent {
    /// The full path, shown lossily when it is not UTF-8.
    pub path: String,
    /// Unix seconds.
    pub at: i64,
}

/// What one site's sync did (or, on a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteReport {
    pub site: String,
    pub dry_run: bool,
    pub staged_files: u64,
    pub staged_bytes: u64,
    /// Files found changed since the scan (with a new mtime or size); skipped until the
    /// next scan records them.
    pub skipped_changed: u64,
    /// Files too big for this stage, waiting for the next image, and their bytes.
    pub direct_files: u64,
    pub direct_bytes: u64,
    pub images: Vec<String>,
    /// Images an interrupted run had stored that this run verified and recorded.
    pub adopted_images: Vec<String>,
    pub archived_files: u64,
    pub archived_bytes: u64,
    pub freed_files: u64,
    pub freed_bytes: u64,
    /// Staged copies of archived contents that could not be deleted this time (a later run
    /// tries again).
    pub waiting_to_free: u64,
    /// Still staged (not yet in an image) after the run.
    pub pending_bytes: u64,
    /// Staged copies removed under `stage-retention-days` (gone locally for that long).
    pub expired_files: u64,
    pub expired_bytes: u64,
    /// Unfinished uploads cleaned up: orphans left by a crash, and uploads no run will
    /// continue (their image was planned differently this time).
    pub orphans_aborted: u64,
    /// Staged objects an interrupted run left unrecorded, deleted by this one.
    pub garbage_removed: u64,
    pub uploads_abandoned: u64,
    /// Archive objects found or made that lomob cannot verify: kept on record and billed,
    /// never counted as holding anything (see `lomob status`).
    pub unverified_objects: Vec<String>,
    /// Files whose bytes changed while their size, mtime and inode did not: possible silent
    /// corruption. The new bytes are backed up as a new version; the old ones stay.
    pub silent_changes: Vec<FileEvent>,
    /// Versions that changed before any copy of them was made: they can never be backed up.
    pub lost_versions: Vec<FileEvent>,
    pub requests: RequestCounts,
    pub errors: Vec<SiteError>,
    pub ok: bool,
}

/// One thing that went wrong, with the kind the caller acts on (exit code, alert).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SiteError {
    pub kind: ErrorKind,
    /// What happened and what to do, naming the site, the file or the key.
    pub message: String,
}

impl std::fmt::Display for SiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl SiteReport {
    /// Records an error of the given kind; the site's run did not do all its job.
    fn fail_with(&mut self, kind: ErrorKind, e: impl std::fmt::Display) {
        self.errors.push(SiteError {
            kind,
            message: e.to_string(),
        });
        self.ok = false;
    }

    /// Records an error, with its kind.
    fn fail(&mut self, e: &SyncError) {
        self.fail_with(e.kind(), e);
    }

    /// The kind that matters most among this report's errors: integrity first (an alert),
    /// then configuration, then anything else, transient last (the next run continues).
    pub fn worst(&self) -> Option<ErrorKind> {
        let rank = |k: ErrorKind| match k {
            ErrorKind::Integrity => 0,
            ErrorKind::Config | ErrorKind::Permission => 1,
            ErrorKind::Transient => 3,
            _ => 2,
        };
        self.errors.iter().map(|e| e.kind).min_by_key(|k| rank(*k))
    }
}

/// After this many failed uploads in a row the server is taken as down for this run. Only
/// the backend's failures count: a file that changed or cannot be read is its own problem.
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
    if !opts.dry_run {
        sweep_tmp(&crate::config::data_dir().join("tmp"));
    }
    if let Err(e) = run(&m, &site, &opts, &mut r).await {
        r.fail(&e);
    }
    r.requests = site.requests();
    if !opts.dry_run {
        if let Err(e) = record_run(&m, &r, started) {
            // `status` and `cost` read the run records: say so rather than lose it quietly.
            r.fail_with(
                ErrorKind::Other,
                format!("could not record this run in the manifest: {e}"),
            );
        }
    }
    r
}

/// Removes files a killed run left in lomob's temporary folder (ciphertext on its way up,
/// downloads for checks and recovery) once they are a week old: no live transfer keeps a
/// file unmodified that long. Folders (an archive step's, per run) are left alone.
fn sweep_tmp(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let week = std::time::Duration::from_secs(7 * 86_400);
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > week);
        if meta.is_file() && old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

async fn run(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    opts: &SyncOptions,
    r: &mut SiteReport,
) -> error::Result<()> {
    if !opts.dry_run {
        mark::claim(m, site).await?;
        let journal = m.upload_journal(&site.name);
        let owned = |k: &str| crate::keys::is_site_image_key(&site.name, k);
        r.orphans_aborted = site.archive.abort_orphans(&owned, &journal).await? as u64
            + site.stage.abort_orphans().await?;
    }
    // Set until a run ends with every upload accounted for: the next run then knows an
    // earlier one was killed or failed mid-upload, and sweeps what it left on the stage.
    let interrupted = !opts.dry_run && m.mark(&unsettled_mark(&site.name))?.is_some();
    if !opts.dry_run {
        m.set_mark(&unsettled_mark(&site.name), crate::manifest::now())?;
        m.flush()?;
    }
    let p = pending(m, &site.name, &site.config, Detail::Summary)?;
    if opts.dry_run {
        r.expired_files = p.expired.len() as u64;
        r.expired_bytes = p.expired.iter().map(|w| w.size).sum();
    } else {
        free::free_archived(m, site, p.staged_archived.clone(), r).await?;
        free::expire_staged(m, site, &p.expired, r).await?;
    }

    // Everything waiting for an image: staged copies, files too big for the stage, and files
    // not staged yet. When this run packs, the files that fill its images go from their
    // originals straight into the archive: staging them first would send them twice and
    // read them once more, only to delete the staged copies minutes later.
    let waiting_bytes = p.staged_waiting_bytes + p.not_yet_safe.bytes;
    let pack = opts.pack_now || waiting_bytes >= site.config.pack_threshold.bytes();
    if !pack && waiting_bytes > 0 {
        tracing::info!(
            "site {}: {} waiting, packing at {}",
            site.name,
            ByteSize(waiting_bytes),
            site.config.pack_threshold
        );
    }
    // Interrupted images are continued whatever the threshold; new ones only when packing.
    // Only then is everything waiting listed; otherwise what is not yet safe is read and
    // staged a chunk at a time.
    let archive_failed = if pack || !m.pending_images(&site.name)?.is_empty() {
        let p = pending(m, &site.name, &site.config, Detail::Full)?;
        archive_then_stage(m, site, opts, pack, p, r).await?
    } else {
        stage_in_chunks(m, site, opts, p.not_yet_safe, r).await?;
        None
    };
    r.pending_bytes = if opts.dry_run {
        waiting_bytes.saturating_sub(r.archived_bytes)
    } else {
        // From the kept totals: no record is read again.
        m.totals()?.site(&site.name).staged_unarchived().bytes + r.direct_bytes
    };

    if !opts.dry_run {
        snapshot::upload(m, site).await?;
        if archive_failed.is_none() && r.errors.is_empty() {
            if interrupted {
                sweep_stage(m, site, r).await?;
            }
            m.remove_mark(&unsettled_mark(&site.name))?;
            m.flush()?;
        }
    }
    match archive_failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Contents read and staged per chunk by a run that does not pack.
const STAGE_CHUNK: usize = 4096;
/// Most contents not yet safe that a run lists beforehand (about 3 MB of ids); beyond it,
/// most files are to be staged anyway and each file's copies are looked up.
const KNOWN_TARGETS: usize = 1 << 16;

/// A run that packs or continues an image: everything waiting is listed and goes into
/// images, oldest first; what no image took is staged. Returns the archive step's failure,
/// if any, once the staging is done (or the staging's own error).
async fn archive_then_stage(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    opts: &SyncOptions,
    pack: bool,
    p: Pending,
    r: &mut SiteReport,
) -> error::Result<Option<SyncError>> {
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
    let mut handled: HashSet<ContentId> = HashSet::new();
    let mut new_versions = Vec::new();
    let archive_failed = archive_step::run(
        archive_step::Step {
            m,
            site,
            opts,
            pack,
        },
        &waiting,
        r,
        &mut handled,
        &mut new_versions,
    )
    .await
    .err();
    let left: Vec<&WantedContent> = p
        .direct
        .iter()
        .filter(|w| !handled.contains(&w.content))
        .collect();
    r.direct_files = left.len() as u64;
    r.direct_bytes = left.iter().map(|w| w.size).sum();

    // Stage what no image took: the remainder below a full image, or everything when this
    // run did not pack or packing failed, so nothing is left unsafe for longer than a run;
    // and new versions found while reading (bytes changed without a new mtime).
    let to_stage: Vec<WantedContent> = p
        .to_stage
        .iter()
        .filter(|w| !handled.contains(&w.content))
        .cloned()
        .chain(new_versions)
        .collect();
    if opts.dry_run {
        r.staged_files = to_stage.len() as u64;
        r.staged_bytes = to_stage.iter().map(|w| w.size).sum();
    } else if !to_stage.is_empty() {
        let bar = stage_step::bar(site, opts, to_stage.iter().map(|w| w.size).sum());
        if let Err(e) = stage_step::stage_all(m, site, to_stage, &bar, r).await {
            if let Some(a) = archive_failed {
                r.fail(&a);
            }
            return Err(e);
        }
    }
    Ok(archive_failed)
}

/// A run that does not pack: what is not yet safe is read in chunks of [`STAGE_CHUNK`] and
/// staged (or, for a dry run, counted), so memory grows with a chunk, not the library.
async fn stage_in_chunks(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    opts: &SyncOptions,
    unsafe_total: crate::manifest::Tally,
    r: &mut SiteReport,
) -> error::Result<()> {
    // Uploads this run will never continue are still aborted.
    let mut handled = HashSet::new();
    let mut new_versions = Vec::new();
    archive_step::run(
        archive_step::Step {
            m,
            site,
            opts,
            pack: false,
        },
        &[],
        r,
        &mut handled,
        &mut new_versions,
    )
    .await?;
    let no_limit = plan::one_shot_limit(&site.config).is_none();
    if opts.dry_run && no_limit {
        // Without a size limit on the stage, what is not yet safe is exactly what would be
        // staged: the kept totals say how much, with no record read.
        r.staged_files = unsafe_total.files;
        r.staged_bytes = unsafe_total.bytes;
        return Ok(());
    }
    let bar = stage_step::bar(site, opts, unsafe_total.bytes);
    // A few new files in a large library: find them by content first (one merged pass),
    // rather than look up every file's copies.
    let mut cursor = match m.unsafe_contents(&site.name, KNOWN_TARGETS)? {
        Some(targets) => plan::Cursor::with_targets(targets),
        None => plan::Cursor::default(),
    };
    while !cursor.done() {
        let chunk = plan::unsafe_chunk(m, &site.name, &site.config, &mut cursor, STAGE_CHUNK)?;
        r.direct_files += chunk.direct.files;
        r.direct_bytes += chunk.direct.bytes;
        if opts.dry_run {
            r.staged_files += chunk.to_stage.len() as u64;
            r.staged_bytes += chunk.to_stage.iter().map(|w| w.size).sum::<u64>();
        } else if !chunk.to_stage.is_empty() {
            stage_step::stage_all(m, site, chunk.to_stage, &bar, r).await?;
        }
    }
    Ok(())
}

/// The manifest mark that is set while a site's sync may leave objects it has not recorded.
fn unsettled_mark(site: &str) -> String {
    format!("sync-unsettled/{site}")
}

/// After a run that was killed or failed: one LIST of `stage/`, and lomob's own staged
/// objects the manifest does not record are deleted. An upload cut short leaves one under
/// its final name on a disk, SFTP or WebDAV (and a kill between an upload and its record
/// leaves a whole one anywhere); when its content then goes straight into an image, no
/// upload ever replaces it, and it would be billed for nothing until a `check --repair`.
/// Only this site's names are touched, on a location its mark shows it owns, by the one
/// process that holds the manifest.
async fn sweep_stage(m: &Manifest, site: &Site, r: &mut SiteReport) -> error::Result<()> {
    let known: HashSet<String> = m
        .staged(Some(&site.name))?
        .into_iter()
        .map(|(_, _, rec)| rec.key)
        .collect();
    let listed = match site.stage.list(crate::keys::STAGE).await {
        Ok(l) => l,
        Err(e) => {
            // Left for the next run (the mark stays set) or for `check --repair`.
            tracing::warn!("site {}: stage not swept: {e}", site.name);
            return Ok(());
        }
    };
    for o in listed {
        let ours = crate::keys::is_stage_key(&o.key) || crate::keys::is_stage_partial_key(&o.key);
        if !ours || known.contains(&o.key) {
            continue;
        }
        match site.stage.delete(&o.key).await {
            Ok(()) => {
                tracing::info!(
                    "site {}: removed {} ({}), left unrecorded by an interrupted run",
                    site.name,
                    o.key,
                    ByteSize(o.size)
                );
                r.garbage_removed += 1;
            }
            Err(e) => tracing::warn!("site {}: {e}", site.name),
        }
    }
    Ok(())
}

fn record_run(
    m: &Manifest,
    r: &SiteReport,
    started: i64,
) -> Result<(), crate::manifest::ManifestError> {
    let counts = [
        ("staged_files", r.staged_files),
        ("staged_bytes", r.staged_bytes),
        ("archived_files", r.archived_files),
        ("archived_bytes", r.archived_bytes),
        ("images", r.images.len() as u64),
        ("adopted_images", r.adopted_images.len() as u64),
        ("freed_files", r.freed_files),
        ("waiting_to_free", r.waiting_to_free),
        ("expired_files", r.expired_files),
        ("skipped_changed", r.skipped_changed),
        ("silent_changes", r.silent_changes.len() as u64),
        ("lost_versions", r.lost_versions.len() as u64),
        ("unverified_objects", r.unverified_objects.len() as u64),
        ("uploads_abandoned", r.uploads_abandoned),
        ("orphans_aborted", r.orphans_aborted),
        ("garbage_removed", r.garbage_removed),
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
        errors: r
            .errors
            .iter()
            .take(100)
            .map(|e| e.message.clone())
            .collect(),
        ok: r.ok,
    })?;
    m.flush()?;
    Ok(())
}

/// True when the file at `path` still has the recorded size and mtime.
pub(crate) fn unchanged(path: &std::path::Path, size: u64, mtime_ns: i64) -> bool {
    std::fs::symlink_metadata(path)
        .map(|md| md.is_file() && md.len() == size && crate::scan::walk::mtime_ns(&md) == mtime_ns)
        .unwrap_or(false)
}

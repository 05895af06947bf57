//! The stage step of a sync: each content not yet safe on the site goes up once, streamed
//! and verified, as `stage/<content id>`.
//!
//! Uploads run concurrently (the site's `concurrency`). Verified ones are settled (on a
//! local disk: made durable, one sync for all of them) and recorded together, every second
//! or every [`SETTLE_EVERY`] uploads, so a kill -9 costs at most a second of uploads, sent
//! again under the same content-derived names; nothing is recorded before it is durable. A file that changed under the upload is the
//! file's problem, not the backend's: it is examined ([`super::changed`]) and never counts
//! toward stopping the site.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::changed::{self, Found};
use super::{SiteReport, SyncError, SyncOptions, WantedContent, MAX_CONSECUTIVE_FAILURES};
use crate::manifest::{self, Manifest, ManifestBatch, StagedRecord};
use crate::progress::Progress;
use crate::site::Site;
use crate::store::{ObjectInfo, StoreError};
use lomob_backends::ErrorKind;

/// Why one content was not staged.
enum Miss {
    /// Its original changed since the scan (size or mtime): the next scan records it.
    Changed,
    Failed(StoreError),
}

/// Stages `todo`, then any new versions found on the way (bytes that changed without a new
/// mtime are recorded and staged in the same run).
/// `bar` shows the progress (a run staging in chunks keeps one for all of them).
pub(super) async fn stage_all(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    todo: Vec<WantedContent>,
    bar: &Progress,
    r: &mut SiteReport,
) -> super::error::Result<()> {
    let again = stage_pass(m, site, todo, bar, r).await?;
    if !again.is_empty() {
        // New versions are staged once; if they change again, the next run sees it.
        stage_pass(m, site, again, bar, r).await?;
    }
    Ok(())
}

/// The progress bar of a run's staging, `bytes` in all.
pub(super) fn bar(site: &Site, opts: &SyncOptions, bytes: u64) -> Progress {
    Progress::with_total(&format!("{} stage", site.name), opts.progress, bytes)
}

async fn stage_one(site: &Site, w: &WantedContent) -> Result<ObjectInfo, Miss> {
    if !w.unchanged_on_disk() {
        return Err(Miss::Changed);
    }
    site.stage
        .put_file_unsettled(&site.stage_key(&w.content), &w.source, w.size, &w.sha256)
        .await
        .map_err(Miss::Failed)
}

/// Uploads settled and recorded at once, at most (and at least every second): a kill
/// costs at most these and the ones in flight (one `syncfs` per 32 small copies is a few
/// percent of their time; per 1,024, a kill early in a run lost everything it had copied).
const SETTLE_EVERY: usize = 32;

/// Settles the stage (its uploads become durable), then records `done` in one batch and
/// makes the manifest durable.
async fn settle(
    m: &Manifest,
    site: &Site,
    done: &mut Vec<(WantedContent, ObjectInfo)>,
    r: &mut SiteReport,
) -> super::error::Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    if let Err(e) = site.stage.settle().await {
        // Nothing of the batch is recorded: the next run stages it again.
        done.clear();
        r.fail_with(e.kind(), &e);
        return Err(SyncError::found(
            e.kind(),
            format!(
                "site {}: the stage could not be made durable: {e}",
                site.name
            ),
        ));
    }
    let mut batch = ManifestBatch::default();
    for (w, obj) in done.drain(..) {
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
    }
    m.apply(batch)?;
    m.flush()?;
    Ok(())
}

/// One round of uploads; returns the new versions to stage next.
async fn stage_pass(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    todo: Vec<WantedContent>,
    bar: &Progress,
    r: &mut SiteReport,
) -> super::error::Result<Vec<WantedContent>> {
    let concurrency = site.config.transfer.concurrency.clamp(1, 16);
    let mut results = futures::stream::iter(todo)
        .map(|w| {
            let site = site.clone();
            async move {
                let res = stage_one(&site, &w).await;
                (w, res)
            }
        })
        .buffer_unordered(concurrency);
    let mut again = Vec::new();
    let mut consecutive = 0usize;
    let mut last_flush = Instant::now();
    let mut done = Vec::new();
    while let Some((w, res)) = results.next().await {
        match res {
            Ok(obj) => {
                consecutive = 0;
                bar.add(1, w.size);
                done.push((w, obj));
                if done.len() >= SETTLE_EVERY || last_flush.elapsed() >= Duration::from_secs(1) {
                    settle(m, site, &mut done, r).await?;
                    last_flush = Instant::now();
                }
            }
            Err(Miss::Changed) => r.skipped_changed += 1,
            Err(Miss::Failed(e)) => match e.source_io().map(std::io::Error::kind) {
                Some(std::io::ErrorKind::InvalidData) => match changed::examine(m, &w, r)? {
                    Found::Silent(nw) => again.push(*nw),
                    Found::Edited | Found::Unchanged | Found::Gone => r.skipped_changed += 1,
                },
                // The file could not be read: its own problem, reported, not the backend's.
                Some(_) => r.fail_with(e.kind(), &e),
                None => {
                    let transient = e.is_transient();
                    r.fail_with(e.kind(), &e);
                    consecutive += 1;
                    if consecutive >= MAX_CONSECUTIVE_FAILURES {
                        settle(m, site, &mut done, r).await?;
                        return Err(SyncError::found(
                            if transient {
                                ErrorKind::Transient
                            } else {
                                e.kind()
                            },
                            format!(
                                "site {}: {} uploads failed in a row{}; stopping this site (the next run continues)",
                                site.name,
                                consecutive,
                                if transient { " (the server looks unreachable)" } else { "" }
                            ),
                        ));
                    }
                }
            },
        }
    }
    settle(m, site, &mut done, r).await?;
    m.flush()?;
    Ok(again)
}

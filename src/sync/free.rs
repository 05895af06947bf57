//! Staged copies that are no longer needed: those whose content is archived and verified on
//! the same site (freed by every run, not only the one that archived them, so a failed
//! delete or a kill between the archive record and the delete never leaves them for good),
//! and those past the site's `stage-retention-days`.

use std::sync::Arc;

use super::{SiteReport, WantedContent};
use crate::manifest::{ContentId, Manifest, ManifestBatch, StagedRecord};
use crate::site::Site;

/// Deletes the staged copies of contents archived on this site. A copy whose delete fails
/// stays recorded and is counted in `waiting_to_free`; a later run tries again.
pub(super) async fn free_archived(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    copies: Vec<(ContentId, StagedRecord)>,
    r: &mut SiteReport,
) -> super::error::Result<()> {
    let asked = copies.len() as u64;
    let removed = remove_staged(m, site, copies).await?;
    r.waiting_to_free += asked - removed.len() as u64;
    for (_, s) in removed {
        r.freed_files += 1;
        r.freed_bytes += s.size;
    }
    Ok(())
}

/// Removes staged copies past the site's `stage-retention-days` (their content has not
/// existed locally for that long); they will not be archived.
pub(super) async fn expire_staged(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    expired: &[WantedContent],
    r: &mut SiteReport,
) -> super::error::Result<()> {
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

/// Deletes staged copies and forgets them in the manifest; returns those deleted. A copy
/// that fails to go stays recorded (with a warning), so a later run tries again.
async fn remove_staged(
    m: &Arc<Manifest>,
    site: &Arc<Site>,
    copies: Vec<(ContentId, StagedRecord)>,
) -> super::error::Result<Vec<(ContentId, StagedRecord)>> {
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

//! A fresh manifest snapshot on the site's stage after each sync that follows a change, so
//! recovery from nothing works from any one site; the newest few are kept. When no record a
//! snapshot holds has changed since the last one put on the site (same manifest
//! generation), and that snapshot is still listed there, none is made: a daily sync of an
//! unchanged million-file library would otherwise export and upload it all every day. The
//! run history alone does not count as a change. The archive gets none: it describes
//! itself with the catalog beside every image (kept hot, readable without a thaw), and a
//! snapshot there would cost a cold request on every run that adds an image.

use std::sync::Arc;

use super::SyncError;
use crate::manifest::{self, export, Manifest};
use crate::site::Site;
use lomob_backends::ErrorKind;

/// Snapshots kept on the stage.
pub const KEEP: usize = 3;

pub async fn upload(m: &Arc<Manifest>, site: &Arc<Site>) -> super::error::Result<()> {
    let generation = m.generation()?;
    if let Some((taken_at, key)) = m.last_snapshot(&site.name)? {
        if taken_at == generation && site.stage.list("meta/").await?.iter().any(|o| o.key == key) {
            tracing::info!(
                "site {}: manifest unchanged since its snapshot {key}: none uploaded",
                site.name
            );
            return Ok(());
        }
    }
    let now = manifest::now();
    let dir = crate::config::data_dir().join("tmp");
    std::fs::create_dir_all(&dir).map_err(|e| SyncError::local(&dir, e))?;
    let file = dir.join(format!(
        "manifest-{}-{}.jsonl",
        site.name,
        std::process::id()
    ));
    let (_, written) = export::export_file_hashed(m, &file, now)?;
    let stamp = jiff::Timestamp::from_second(now)
        .map_err(|e| SyncError::found(ErrorKind::Other, format!("the clock says {now}: {e}")))?
        .strftime("%Y%m%dT%H%M%SZ");
    // A sequence number first: a clock that runs behind must never make the newest snapshot
    // look like the oldest one and have it pruned.
    let key = format!("meta/manifest-{:012}-{stamp}.jsonl", m.next_snapshot_seq()?);
    let result = async {
        site.stage
            .put_file(&key, &file, written.bytes, &written.sha256)
            .await?;
        m.set_last_snapshot(&site.name, generation, &key)?;
        let mut old: Vec<String> = site
            .stage
            .list("meta/")
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.contains("manifest-") && k.ends_with(".jsonl"))
            .collect();
        old.sort_by_key(|k| order(k));
        let n = old.len().saturating_sub(KEEP);
        for k in &old[..n] {
            site.stage.delete(k).await?;
        }
        Ok::<(), SyncError>(())
    }
    .await;
    let _ = std::fs::remove_file(&file);
    result
}

/// Where a snapshot name sorts: by its sequence number; names from before sequence numbers
/// (`manifest-<time>.jsonl`) come first, by time.
pub(crate) fn order(key: &str) -> (u64, String) {
    let name = key.rsplit('/').next().unwrap_or(key);
    let seq = name
        .strip_prefix("manifest-")
        .and_then(|r| r.split_once('-'))
        .filter(|(n, _)| n.len() == 12)
        .and_then(|(n, _)| n.parse::<u64>().ok());
    match seq {
        Some(n) => (n + 1, String::new()),
        None => (0, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn snapshots_sort_by_sequence_not_by_clock() {
        let mut keys = vec![
            "meta/manifest-000000000002-20200101T000000Z.jsonl",
            "meta/manifest-20991231T000000Z.jsonl",
            "meta/manifest-000000000010-20190101T000000Z.jsonl",
            "meta/manifest-20100101T000000Z.jsonl",
        ];
        keys.sort_by_key(|k| order(k));
        assert_eq!(
            keys,
            [
                "meta/manifest-20100101T000000Z.jsonl",
                "meta/manifest-20991231T000000Z.jsonl",
                "meta/manifest-000000000002-20200101T000000Z.jsonl",
                "meta/manifest-000000000010-20190101T000000Z.jsonl",
            ]
        );
    }
}

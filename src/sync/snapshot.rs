//! A fresh manifest snapshot on the site's stage after each sync, so recovery from nothing
//! works from any one site; the newest few are kept. The archive gets none: it describes
//! itself with the catalog beside every image (kept hot, readable without a thaw), and a
//! snapshot there would cost a cold request on every run that adds an image.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::manifest::{self, export, Manifest};
use crate::site::Site;

/// Snapshots kept on the stage.
pub const KEEP: usize = 3;

pub async fn upload(m: &Arc<Manifest>, site: &Arc<Site>) -> anyhow::Result<()> {
    let now = manifest::now();
    let dir = crate::config::data_dir().join("tmp");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!(
        "manifest-{}-{}.jsonl",
        site.name,
        std::process::id()
    ));
    export::export_file(m, &file, now)?;
    let bytes = std::fs::read(&file)?;
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let stamp = time::OffsetDateTime::from_unix_timestamp(now)?.format(
        time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
    )?;
    let key = format!("meta/manifest-{stamp}.jsonl");
    let result = async {
        site.stage
            .put_file(&key, &file, bytes.len() as u64, &sha)
            .await?;
        let mut old: Vec<String> = site
            .stage
            .list("meta/")
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.contains("manifest-") && k.ends_with(".jsonl"))
            .collect();
        old.sort();
        let n = old.len().saturating_sub(KEEP);
        for k in &old[..n] {
            site.stage.delete(k).await?;
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_file(&file);
    result
}

//! The thaw workflow's rules: which tier, for how many days, how long it takes, how often to
//! ask, and what it costs. One RestoreObject per image, never per file, and none for an
//! image already thawed or thawing; the request itself is sent by the restore.

use std::time::Duration;

use lomob_backends::{BackendConfig, StorageClass, ThawTier};
use serde::Serialize;

use super::plan::ImageJob;
use crate::site::Site;

/// Poll interval for thaws when nothing else is said: Deep Archive takes hours, and asking
/// more often costs requests without making anything faster.
pub const DEFAULT_POLL: Duration = Duration::from_secs(15 * 60);
/// Test-only override of the poll interval, in seconds.
pub const POLL_ENV: &str = "LOMOB_THAW_POLL_SECONDS";
/// Download speed assumed to size `Days`: a slow home line, so the copy outlasts the download.
const ASSUMED_RATE: u64 = 5 << 20;
/// Days a thawed copy stays readable when the profile does not say.
pub const DEFAULT_DAYS: u32 = 7;

pub fn tier_name(t: ThawTier) -> &'static str {
    match t {
        ThawTier::Bulk => "bulk",
        ThawTier::Standard => "standard",
        ThawTier::Expedited => "expedited",
    }
}

pub fn parse_tier(s: &str) -> Option<ThawTier> {
    match s {
        "bulk" => Some(ThawTier::Bulk),
        "standard" => Some(ThawTier::Standard),
        "expedited" => Some(ThawTier::Expedited),
        _ => None,
    }
}

/// The storage class of a site's archive, for S3 kinds.
pub fn class_of(site: &Site) -> Option<StorageClass> {
    site.archive_client().map(|c| c.storage_class())
}

/// The tier to thaw with on `site`: the one asked for, else the profile's `thaw-tier`,
/// else bulk. Deep Archive has no expedited tier.
pub fn tier_for(site: &Site, asked: Option<ThawTier>) -> Result<ThawTier, String> {
    let profile = site.config.archive.s3().and_then(|s| s.thaw_tier);
    let tier = asked.or(profile).unwrap_or(ThawTier::Bulk);
    if tier == ThawTier::Expedited && class_of(site) == Some(StorageClass::DeepArchive) {
        return Err(format!(
            "site {}: S3 Glacier Deep Archive has no expedited thaw; use --tier standard (within 12 hours) or bulk (within 48 hours){}",
            site.name,
            if asked.is_none() {
                " and fix thaw-tier in the site's [archive] section"
            } else {
                ""
            }
        ));
    }
    Ok(tier)
}

/// The provider's stated upper bound for a thaw.
pub fn ready_within(class: Option<StorageClass>, tier: ThawTier) -> Duration {
    let h = |n: u64| Duration::from_secs(n * 3600);
    match (class, tier) {
        (Some(StorageClass::DeepArchive), ThawTier::Standard) => h(12),
        (Some(StorageClass::DeepArchive), _) => h(48),
        (_, ThawTier::Expedited) => Duration::from_secs(5 * 60),
        (_, ThawTier::Standard) => h(5),
        (_, ThawTier::Bulk) => h(12),
    }
}

/// `Days` for a thaw: the profile's `thaw-days` (7 by default), raised until the copy stays
/// readable while the other images thaw and all of `bytes` are downloaded, with a day to
/// spare for a restore that is run again later rather than waited for.
pub fn days_for(site: &Site, tier_wait: Duration, bytes: u64) -> u32 {
    let configured = site
        .config
        .archive
        .s3()
        .and_then(|s| s.thaw_days)
        .unwrap_or(DEFAULT_DAYS);
    let rate = ASSUMED_RATE;
    let download_days = (bytes / rate).div_ceil(86_400);
    let wait_days = tier_wait.as_secs().div_ceil(86_400);
    configured.max((wait_days + download_days + 1) as u32)
}

/// The poll interval: the test override, else [`DEFAULT_POLL`].
pub fn poll_interval() -> Duration {
    std::env::var(POLL_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_POLL)
}

/// Dollars per GB and per 1,000 requests for a thaw tier of a class (2024 list prices).
fn thaw_price(class: StorageClass, tier: ThawTier) -> Option<(f64, f64)> {
    match (class, tier) {
        (StorageClass::DeepArchive, ThawTier::Bulk) => Some((0.0025, 0.025)),
        (StorageClass::DeepArchive, ThawTier::Standard) => Some((0.02, 0.10)),
        (StorageClass::DeepArchive, ThawTier::Expedited) => None,
        (StorageClass::Glacier, ThawTier::Bulk) => Some((0.0, 0.0)),
        (StorageClass::Glacier, ThawTier::Standard) => Some((0.01, 0.05)),
        (StorageClass::Glacier, ThawTier::Expedited) => Some((0.03, 10.0)),
        _ => Some((0.0, 0.0)),
    }
}

/// Dollars per GB of data out of a backend: AWS's internet egress for S3 without a custom
/// endpoint; `None` where it depends on a provider lomob cannot name (a custom endpoint:
/// R2 charges none, B2 a little); nothing for disks, SFTP and WebDAV.
pub fn egress_per_gb(c: &BackendConfig) -> Option<f64> {
    match c {
        BackendConfig::S3(_) | BackendConfig::Glacier(_) => {
            match c.s3().and_then(|s| s.endpoint.as_deref()) {
                None => Some(0.09),
                Some(_) => None,
            }
        }
        _ => Some(0.0),
    }
}

/// The cost of thawing with one tier.
#[derive(Clone, Debug, Serialize)]
pub struct TierCost {
    pub tier: &'static str,
    pub usd: f64,
    /// Hours within which the provider says the thaw is done.
    pub ready_within_hours: f64,
}

/// What a restore would send and cost, for `--dry-run`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Estimate {
    /// Images that need a RestoreObject (frozen, no thaw running).
    pub thaw_requests: u64,
    pub thaw_bytes: u64,
    /// Thaw cost per tier (tiers the class does not offer are left out).
    pub thaw: Vec<TierCost>,
    /// The tier this restore would use.
    pub tier: Option<&'static str>,
    pub get_requests: u64,
    pub get_usd: f64,
    /// Bytes that would leave the providers.
    pub egress_bytes: u64,
    /// Egress at the providers whose price lomob knows.
    pub egress_usd: f64,
    /// Bytes from providers whose egress price lomob does not know (a custom S3 endpoint:
    /// R2 charges none, B2 a little): see their price list.
    pub egress_unpriced_bytes: u64,
    /// Hours until the last thaw is done with the chosen tier (0: nothing to thaw).
    pub wait_hours: f64,
}

impl Estimate {
    /// Adds an image to thaw (`frozen`) or to read.
    pub fn add_image(&mut self, site: &Site, job: &ImageJob, frozen: bool, tier: ThawTier) {
        let class = class_of(site);
        if frozen {
            self.thaw_requests += 1;
            self.thaw_bytes += job.image_size;
            let gb = job.image_size as f64 / 1e9;
            for t in [ThawTier::Bulk, ThawTier::Standard, ThawTier::Expedited] {
                let Some((per_gb, per_1000)) = class.and_then(|c| thaw_price(c, t)) else {
                    continue;
                };
                let usd = gb * per_gb + per_1000 / 1000.0;
                match self.thaw.iter_mut().find(|c| c.tier == tier_name(t)) {
                    Some(c) => c.usd += usd,
                    None => self.thaw.push(TierCost {
                        tier: tier_name(t),
                        usd,
                        ready_within_hours: ready_within(class, t).as_secs_f64() / 3600.0,
                    }),
                }
            }
            self.tier = Some(tier_name(tier));
            self.wait_hours = self
                .wait_hours
                .max(ready_within(class, tier).as_secs_f64() / 3600.0);
        }
        let gets = job.gets() + 1;
        self.get_requests += gets;
        self.get_usd +=
            crate::cost::prices(&site.config.archive).get_per_1000 * gets as f64 / 1000.0;
        self.add_egress(&site.config.archive, job.download_bytes);
    }

    /// Adds bytes read from a stage or an archive.
    pub fn add_egress(&mut self, c: &BackendConfig, bytes: u64) {
        self.egress_bytes += bytes;
        match egress_per_gb(c) {
            Some(p) => self.egress_usd += p * bytes as f64 / 1e9,
            None => self.egress_unpriced_bytes += bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_archive_waits_are_the_stated_bounds() {
        let da = Some(StorageClass::DeepArchive);
        assert_eq!(ready_within(da, ThawTier::Standard).as_secs(), 12 * 3600);
        assert_eq!(ready_within(da, ThawTier::Bulk).as_secs(), 48 * 3600);
        assert!(thaw_price(StorageClass::DeepArchive, ThawTier::Expedited).is_none());
    }

    #[test]
    fn tiers_round_trip_by_name() {
        for t in [ThawTier::Bulk, ThawTier::Standard, ThawTier::Expedited] {
            assert_eq!(parse_tier(tier_name(t)), Some(t));
        }
        assert_eq!(parse_tier("fast"), None);
    }
}

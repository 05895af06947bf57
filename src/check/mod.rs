//! `lomob check`: are the copies still what they must be?
//!
//! Three parts, each cheap enough to run on a schedule. The [`stage`] part LISTs the stage
//! and compares every object with the manifest by what the server computed (size, ETag),
//! downloading nothing unless `--deep`, which reads a rotating slice of the staged objects
//! within a byte budget. The [`archive`] part LISTs the archive and HEADs each image (never
//! a GET of an image, never a thaw), comparing size, storage class, ETag and fingerprint
//! with what was recorded when the image was verified, and each catalog's size and MD5. The
//! [`local`] part re-reads a rotating slice of the library whose stat did not change, to
//! find bytes that changed under it (possible silent corruption). Results are kept in the
//! manifest for `status`; `--repair` fixes what can be fixed without ever overwriting or
//! deleting an archived object.

pub mod archive;
pub mod local;
pub mod stage;

use lomob_backends::ErrorKind;
use serde::Serialize;

use crate::manifest::{self, CheckRecord, ContentId, Manifest, ManifestError};
use crate::store::RequestCounts;

/// What is wrong with one object or file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// Recorded, but not there.
    Missing,
    WrongSize,
    /// The server's checksum (or the bytes read with `--deep`) differs from the recorded one.
    WrongChecksum,
    /// Where no checksum is kept (a disk, SFTP, WebDAV): modified after it was written.
    Modified,
    WrongStorageClass,
    WrongFingerprint,
    CatalogMissing,
    CatalogWrong,
    /// lomob's name, but the manifest does not know it: garbage (billed).
    Garbage,
    /// Not lomob's: reported, never touched.
    Foreign,
    /// Bytes changed under an unchanged size, mtime and inode.
    SilentCorruption,
    /// A local file that could not be read.
    Unreadable,
}

/// One problem found.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub problem: Problem,
    /// The object key, or the file's path.
    pub what: String,
    pub message: String,
    /// The command that fixes it, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    pub bytes: u64,
    /// The content concerned, for `--repair`.
    #[serde(skip)]
    pub content: Option<ContentId>,
}

/// Why a part could not run to its end.
#[derive(Clone, Debug, Serialize)]
pub struct CheckError {
    pub kind: ErrorKind,
    pub message: String,
}

/// One part's result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartReport {
    pub part: &'static str,
    /// Ran to its end (false: `error` says why).
    pub checked: bool,
    /// Objects or files looked at.
    pub looked_at: u64,
    pub findings: Vec<Finding>,
    /// What `--repair` did.
    pub repaired: Vec<String>,
    /// Things worth knowing that are not problems (a baseline recorded, a budget used up).
    pub notes: Vec<String>,
    /// Bytes read by `--deep` or `--local`.
    pub read_bytes: u64,
    /// Bytes a lomob receiver re-read on its own disk for `--deep` (none downloaded).
    #[serde(rename = "in_place_bytes")]
    pub in_place: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<CheckError>,
    /// Where a rotating read goes on next time.
    #[serde(skip)]
    pub cursor: Option<Vec<u8>>,
}

impl PartReport {
    fn new(part: &'static str) -> Self {
        PartReport {
            part,
            ..Default::default()
        }
    }

    fn find(&mut self, problem: Problem, what: &str, message: String, bytes: u64) -> &mut Finding {
        self.findings.push(Finding {
            problem,
            what: what.to_string(),
            message,
            fix: None,
            bytes,
            content: None,
        });
        self.findings.last_mut().expect("just pushed")
    }

    fn fail(&mut self, kind: ErrorKind, message: String) {
        self.checked = false;
        self.error = Some(CheckError { kind, message });
    }

    /// Keeps the result in the manifest, for `status` and the next rotation.
    pub fn record(&self, m: &Manifest, site: &str) -> Result<(), ManifestError> {
        let mut summary: Vec<String> = self
            .findings
            .iter()
            .take(20)
            .map(|f| format!("{}: {}", f.what, f.message))
            .collect();
        if let Some(e) = &self.error {
            summary.insert(0, format!("could not check: {}", e.message));
        }
        m.put_check(
            site,
            &CheckRecord {
                part: self.part.to_string(),
                ran: manifest::now(),
                problems: self.findings.len() as u64,
                checked: self.checked,
                summary,
                cursor: self.cursor.clone(),
                read_bytes: self.read_bytes,
            },
        )
    }
}

/// What to check and do on each site.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    pub stage: bool,
    pub archive: bool,
    /// Read staged objects (within the site's `deep-budget`) and catalogs.
    pub deep: bool,
    pub repair: bool,
}

/// A site's check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteCheck {
    pub site: String,
    pub parts: Vec<PartReport>,
    pub requests: RequestCounts,
    /// What the requests cost at the site's prices.
    pub cost_usd: f64,
}

/// Requests and cost of a full check, for `--dry-run`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Estimate {
    pub site: String,
    pub list: u64,
    pub head: u64,
    pub get: u64,
    pub get_bytes: u64,
    pub usd: f64,
}

/// Runs the asked-for parts on one site and records their results.
pub async fn check_site(
    m: &Manifest,
    site: &crate::site::Site,
    opts: CheckOptions,
) -> Result<SiteCheck, ManifestError> {
    let mut out = SiteCheck {
        site: site.name.clone(),
        ..Default::default()
    };
    if opts.stage {
        let p = stage::check(m, site, opts).await?;
        p.record(m, &site.name)?;
        out.parts.push(p);
    }
    if opts.archive {
        let p = archive::check(m, site, opts).await?;
        p.record(m, &site.name)?;
        out.parts.push(p);
    }
    out.requests = site.requests();
    out.cost_usd = request_cost(site, &out.requests);
    Ok(out)
}

/// What `requests` cost: LISTs at the PUT price, GETs and HEADs at the GET price, each at
/// its own backend's prices (stage LISTs are few; they are priced as the archive's).
fn request_cost(site: &crate::site::Site, r: &RequestCounts) -> f64 {
    let p = crate::cost::prices(&site.config.archive);
    crate::cost::request_cost(&p, r.list + r.put + r.post, r.get + r.head)
}

/// The requests and cost of a full check of `site` (without `--deep` unless asked).
pub fn estimate(
    m: &Manifest,
    site: &crate::site::Site,
    opts: CheckOptions,
) -> Result<Estimate, ManifestError> {
    let mut e = Estimate {
        site: site.name.clone(),
        ..Default::default()
    };
    let stage_prices = crate::cost::prices(&site.config.stage);
    let archive_prices = crate::cost::prices(&site.config.archive);
    if opts.stage {
        let staged = m.staged(Some(&site.name))?;
        let lists = staged.len() as u64 / 1000 + 2;
        e.list += lists;
        let mut usd = crate::cost::request_cost(&stage_prices, lists, 0);
        if opts.deep {
            let budget = site.config.deep_budget.bytes();
            let mut bytes = 0;
            for (_, _, rec) in &staged {
                if bytes >= budget {
                    break;
                }
                bytes += rec.size;
                e.get += 1;
            }
            e.get_bytes += bytes;
            usd += crate::cost::request_cost(&stage_prices, 0, e.get);
        }
        e.usd += usd;
    }
    if opts.archive {
        let images = m
            .isos()?
            .into_iter()
            .filter(|i| i.uploads.iter().any(|u| u.site == site.name))
            .count() as u64;
        let lists = (images * 2) / 1000 + 1;
        e.list += lists;
        e.head += images;
        let mut gets = 0;
        if opts.deep {
            gets = images;
            e.get += images;
        }
        e.usd += crate::cost::request_cost(&archive_prices, lists, images + gets);
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_monthly_archive_check_of_250_gb_costs_less_than_a_hundredth_of_a_cent() {
        // 50 images of 5 GB: one LIST (images and catalogs fit in one page) and 50 HEADs.
        let cfg: lomob_backends::BackendConfig = toml::from_str(
            "kind = \"glacier\"\nbucket = \"b\"\naccess-key-id = \"k\"\nsecret-access-key = \"s\"",
        )
        .unwrap();
        let p = crate::cost::prices(&cfg);
        let usd = crate::cost::request_cost(&p, 1, 50);
        assert!(usd < 0.0001, "{usd}");
    }
}

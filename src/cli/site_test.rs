//! `lomob site test NAME`: a probe of both backends of a site, step by step, with a clear
//! reason and what to do when a step fails. On a cold archive nothing is written that could
//! not be deleted for free: write access is checked by starting and aborting a multipart
//! upload, and the storage class by a HEAD of an existing image.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use lomob_backends::ErrorKind;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Context;
use crate::archive::{MemorySource, PutOutcome, PutRequest};
use crate::exit;
use crate::site::Site;
use crate::store::{ObjectInfo, Role, StoreError};
use crate::sync::mark::{self, MarkState};

#[derive(Serialize)]
struct Step {
    role: Role,
    step: &'static str,
    ok: bool,
    detail: String,
    ms: u128,
}

fn hint(e: &StoreError) -> &'static str {
    match e.source.s3_code() {
        Some("InvalidAccessKeyId") => {
            return "the access key id is unknown to the server: check access-key-id"
        }
        Some("SignatureDoesNotMatch") => {
            return "the secret key does not match the access key: check secret-access-key"
        }
        Some("AccessDenied") => {
            return "the keys are valid but may not do this here: check the key's permissions (policy) for this bucket"
        }
        _ => {}
    }
    match e.kind() {
        ErrorKind::Permission => "the credentials were refused or lack permission: check the keys and what they may do",
        ErrorKind::NotFound => "the bucket or folder does not exist: check its name and region, or create it",
        ErrorKind::Transient => "the server could not be reached or failed: check the endpoint, the network, and try again",
        ErrorKind::Config => "the profile is incomplete or wrong: fix the site's section",
        ErrorKind::Frozen => "the object is in cold storage and needs a thaw before it can be read",
        ErrorKind::Integrity => "the server holds other bytes than were sent, or a file changed while it was read: check the server's disk, and run again",
        ErrorKind::Space => "no space left: free some space on the disk (or raise the quota) and run again",
        ErrorKind::Other => "see the message above",
    }
}

struct Probe {
    steps: Vec<Step>,
}

impl Probe {
    fn record<T>(
        &mut self,
        role: Role,
        step: &'static str,
        start: Instant,
        r: Result<T, StoreError>,
        ok_detail: impl FnOnce(&T) -> String,
    ) -> Option<T> {
        let ms = start.elapsed().as_millis();
        match r {
            Ok(v) => {
                self.steps.push(Step {
                    role,
                    step,
                    ok: true,
                    detail: ok_detail(&v),
                    ms,
                });
                Some(v)
            }
            Err(e) => {
                self.steps.push(Step {
                    role,
                    step,
                    ok: false,
                    detail: format!("{e}\n      -> {}", hint(&e)),
                    ms,
                });
                None
            }
        }
    }

    /// Runs one timed step and records how it went.
    async fn step<T>(
        &mut self,
        role: Role,
        step: &'static str,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
        ok_detail: impl FnOnce(&T) -> String,
    ) -> Option<T> {
        let start = Instant::now();
        let r = fut.await;
        self.record(role, step, start, r, ok_detail)
    }

    fn check(&mut self, role: Role, step: &'static str, ok: bool, detail: String) {
        self.steps.push(Step {
            role,
            step,
            ok,
            detail,
            ms: 0,
        });
    }
}

fn open(ctx: &Context, name: &str) -> anyhow::Result<Site> {
    Ok(Site::open(name, ctx.site_config(name)?)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `lomob site claim NAME`.
pub fn claim(ctx: &Context, name: &str) -> anyhow::Result<u8> {
    let site = open(ctx, name)?;
    let m = ctx.open_manifest()?;
    runtime()?.block_on(mark::take_over(&m, &site))?;
    if !ctx.json {
        println!(
            "site {name}: stage {} and archive {} are now marked as this manifest's",
            site.stage.info().location,
            site.archive.info().location
        );
    }
    Ok(exit::SUCCESS)
}

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<u8> {
    let site = open(ctx, name)?;
    let m = ctx.open_manifest()?;
    let probe = runtime()?.block_on(probe(&site, &m));
    let failed = probe.steps.iter().any(|s| !s.ok);
    if ctx.json {
        super::output::json(&probe.steps)?;
    } else {
        let mut out = super::output::stdout();
        writeln!(
            out,
            "site {name}: stage {} ({}), archive {} ({})",
            site.stage.info().kind,
            site.stage.info().location,
            site.archive.info().kind,
            site.archive.info().location
        )?;
        for s in &probe.steps {
            writeln!(
                out,
                "  {} {:<7} {:<10} {}{}",
                if s.ok { "ok  " } else { "FAIL" },
                s.role.to_string(),
                s.step,
                s.detail,
                if s.ms > 0 {
                    format!(" ({} ms)", s.ms)
                } else {
                    String::new()
                }
            )?;
        }
    }
    Ok(if failed { exit::FAILURE } else { exit::SUCCESS })
}

/// Whose the site's locations are (see [`mark`]).
async fn check_marks(site: &Site, m: &crate::manifest::Manifest, p: &mut Probe) {
    match mark::check(m, site).await {
        Ok(marks) => {
            for (role, st) in marks {
                let (ok, detail) = match st {
                    MarkState::Ours => (true, "marked for this site and manifest".to_string()),
                    MarkState::Unmarked => (
                        true,
                        "not marked yet: the first sync marks it for this site".into(),
                    ),
                    MarkState::Torn => (
                        true,
                        "holds a cut copy of this site's mark (a write was interrupted): the next sync writes it again".into(),
                    ),
                    MarkState::Foreign(other) => (
                        false,
                        format!(
                            "marked for site {:?} of manifest {}: two sites or machines must not share a location; give this site its own, or run `lomob site claim {}` if that manifest is gone for good",
                            other.site, other.manifest, site.name
                        ),
                    ),
                };
                p.check(role, "owner", ok, detail);
            }
        }
        Err(e) => p.check(Role::Stage, "owner", false, e.to_string()),
    }
}

async fn probe(site: &Site, m: &crate::manifest::Manifest) -> Probe {
    let mut p = Probe { steps: Vec::new() };
    check_marks(site, m, &mut p).await;
    let key = format!(
        "meta/lomob-probe-{}-{}",
        std::process::id(),
        crate::manifest::now()
    );
    let body: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    probe_stage(site, &mut p, &key, &body).await;
    if site.archive.info().capabilities.min_storage_days > 0 {
        probe_cold_archive(site, &mut p, &key).await;
    } else {
        probe_hot_archive(site, m, &mut p, &key, &body).await;
    }
    p
}

/// The stage: the full cycle.
async fn probe_stage(site: &Site, p: &mut Probe, key: &str, body: &[u8]) {
    let wrote = p
        .step(
            Role::Stage,
            "write",
            site.stage.put_bytes(key, body.to_vec()),
            |o| format!("{} ({} bytes, verified)", o.key, o.size),
        )
        .await;
    if wrote.is_some() {
        round_trip(
            p,
            Role::Stage,
            key,
            body,
            async { site.stage.stat(key).await.map(|o| o.is_some()) },
            site.stage.list("meta/"),
            site.stage.read_range(key, 0..body.len() as u64),
            site.stage.delete(key),
        )
        .await;
    }
}

/// A cold archive: nothing is stored that could not be deleted for free. Write access is
/// shown by starting and aborting a multipart upload, the class by a HEAD of the newest
/// image.
async fn probe_cold_archive(site: &Site, p: &mut Probe, key: &str) {
    let caps = site.archive.info().capabilities.clone();
    let list = p
        .step(Role::Archive, "list", site.archive.list("archive/"), |v| {
            format!("{} objects under archive/", v.len())
        })
        .await;
    if let Some(client) = site.archive_client() {
        let started_and_aborted = async {
            let id = client.create_multipart_upload(key, &[]).await?;
            client.abort_multipart_upload(key, &id).await
        };
        let r = async {
            started_and_aborted
                .await
                .map_err(|e| StoreError::new(site.archive.info(), "write", key, e))
        };
        p.step(Role::Archive, "write", r, |_| {
            "multipart upload started and aborted (nothing stored)".into()
        })
        .await;
    }
    let newest = list
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.key.ends_with(".iso"))
        .max_by_key(|o| o.modified);
    let Some(o) = newest else {
        p.check(
            Role::Archive,
            "class",
            true,
            "no images yet: storage class checked after the first one".into(),
        );
        return;
    };
    if let Some(Some(obj)) = p
        .step(Role::Archive, "head", site.archive.stat(&o.key), |_| {
            o.key.to_string()
        })
        .await
    {
        let want = caps.storage_class.clone().unwrap_or_default();
        let got = obj.storage_class.clone().unwrap_or_default();
        p.check(
            Role::Archive,
            "class",
            got == want,
            format!(
                "{} is {got} (expected {want}); not read, nothing deleted",
                o.key
            ),
        );
    }
}

/// A hot archive (a disk, SFTP, WebDAV): the full cycle, through the archive's own put.
async fn probe_hot_archive(
    site: &Site,
    m: &crate::manifest::Manifest,
    p: &mut Probe,
    key: &str,
    body: &[u8],
) {
    let journal = m.upload_journal(&site.name);
    let sha: [u8; 32] = Sha256::digest(body).into();
    let put = async {
        site.archive
            .put(PutRequest {
                key,
                source: Arc::new(MemorySource(body.to_vec())),
                fingerprint: &hex::encode(sha),
                multipart_only: false,
                journal: &journal,
                progress: &|_| {},
            })
            .await
            .and_then(|o| match o {
                PutOutcome::Stored(s) => Ok(s),
                PutOutcome::Occupied { reason, .. } => Err(StoreError::refused(
                    site.archive.info(),
                    "write",
                    key,
                    format!("the probe's name is taken: {reason}"),
                )),
            })
    };
    let wrote = p
        .step(Role::Archive, "write", put, |o| {
            format!(
                "{} ({} bytes, verified)",
                o.object.info.key, o.object.info.size
            )
        })
        .await;
    if wrote.is_some() {
        round_trip(
            p,
            Role::Archive,
            key,
            body,
            async { site.archive.stat(key).await.map(|o| o.is_some()) },
            site.archive.list("meta/"),
            site.archive.read_range(key, 0..body.len() as u64),
            site.archive.delete(key),
        )
        .await;
    }
}

/// After a probe object was written: it is found, listed, reads back the same, and goes.
#[allow(clippy::too_many_arguments)]
async fn round_trip(
    p: &mut Probe,
    role: Role,
    key: &str,
    body: &[u8],
    stat: impl std::future::Future<Output = Result<bool, StoreError>>,
    list: impl std::future::Future<Output = Result<Vec<ObjectInfo>, StoreError>>,
    read: impl std::future::Future<Output = Result<Vec<u8>, StoreError>>,
    delete: impl std::future::Future<Output = Result<(), StoreError>>,
) {
    p.step(role, "stat", stat, |found| {
        if *found { "found" } else { "missing" }.into()
    })
    .await;
    if let Some(list) = p
        .step(role, "list", list, |v| {
            format!("{} objects under meta/", v.len())
        })
        .await
    {
        let found = list.iter().any(|o| o.key == key);
        p.check(
            role,
            "list",
            found,
            if found {
                "probe listed"
            } else {
                "probe not in the listing"
            }
            .into(),
        );
    }
    if let Some(back) = p
        .step(role, "read", read, |b| format!("{} bytes", b.len()))
        .await
    {
        let same = back == body;
        p.check(
            role,
            "read",
            same,
            if same { "bytes match" } else { "bytes differ" }.into(),
        );
    }
    p.step(role, "delete", delete, |_| "removed".into()).await;
}

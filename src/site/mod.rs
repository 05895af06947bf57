//! A site opened for work: its profile, its stage and archive behind the engine's traits,
//! and the request counters of the current run.
//!
//! This is the one place that decides which implementation serves a backend kind: S3 kinds
//! archive through our signed client (resumable multipart, thaw), everything else through
//! OpenDAL; every archive sits behind the minimum-storage guard, every stage behind the
//! request counter.

use std::sync::Arc;

use lomob_backends::observe::RequestObserver;
use lomob_backends::s3::client::S3Client;
use lomob_backends::{BackendConfig, BackendError};

use crate::archive::opendal_archive::OpendalArchive;
use crate::archive::s3_archive::S3Archive;
use crate::archive::sealed::SealedArchive;
use crate::archive::{Archive, MinStorageGuard};
use crate::config::SiteConfig;
use crate::crypt::SiteCrypt;
use crate::stage::counting::Counting;
use crate::stage::opendal_stage::OpendalStage;
use crate::stage::s3_stage::S3Stage;
use crate::stage::sealed::SealedStage;
use crate::stage::Stage;
use crate::store::{BackendInfo, RequestCounters, RequestCounts, Role, StoreError};

pub struct Site {
    pub name: String,
    pub config: SiteConfig,
    /// The site's keys when it is encrypted.
    pub crypt: Option<Arc<SiteCrypt>>,
    pub stage: Box<dyn Stage>,
    pub archive: Box<dyn Archive>,
    stage_requests: Arc<RequestCounters>,
    archive_requests: Arc<RequestCounters>,
    stage_client: Option<S3Client>,
    archive_client: Option<S3Client>,
}

/// Backends that speak HTTP: their requests are counted as sent, by the transport.
fn speaks_http(c: &BackendConfig) -> bool {
    !matches!(c, BackendConfig::Fs(_) | BackendConfig::Sftp(_))
}

/// The folder of a local-disk backend, whose writes lomob makes durable itself.
fn local_root(c: &BackendConfig) -> Option<std::path::PathBuf> {
    match c {
        BackendConfig::Fs(f) => f.resolved_root().ok(),
        _ => None,
    }
}

/// Where a backend writes, for messages and `site list`.
pub fn location(c: &BackendConfig) -> String {
    match c {
        BackendConfig::Fs(f) => f.root.display().to_string(),
        BackendConfig::S3(_) | BackendConfig::Glacier(_) => {
            let s = c.s3().expect("an S3 kind");
            format!(
                "s3://{}/{}{}",
                s.bucket,
                s.prefix.trim_matches('/'),
                s.endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            )
        }
        BackendConfig::Gdrive(g) => format!("gdrive:{}", g.root),
        BackendConfig::Onedrive(o) => format!("onedrive:{}", o.root),
        BackendConfig::Sftp(s) => format!("sftp://{}@{}{}", s.user, s.host, s.root),
        BackendConfig::Webdav(w) => format!("{}{}", w.endpoint.trim_end_matches('/'), w.root),
    }
}

fn info(site: &str, role: Role, c: &BackendConfig) -> BackendInfo {
    BackendInfo {
        site: site.to_string(),
        role,
        kind: c.kind(),
        capabilities: c.capabilities(),
        location: location(c),
    }
}

impl Site {
    /// Builds the backends of site `name`. Reads secrets; makes no request.
    pub fn open(name: &str, config: &SiteConfig) -> Result<Site, StoreError> {
        let t = &config.transfer;
        let stage_info = info(name, Role::Stage, &config.stage);
        let archive_info = info(name, Role::Archive, &config.archive);
        let op_err = |i: &BackendInfo, e: BackendError| StoreError::new(i, "open", "", e);
        // One bandwidth limit for the whole site, stage and archive.
        let pacer = t.pacer();
        let stage_requests = Arc::new(RequestCounters::default());
        let archive_requests = Arc::new(RequestCounters::default());
        let observer = |c: &BackendConfig, counter: &Arc<RequestCounters>| {
            speaks_http(c).then(|| counter.clone() as Arc<dyn RequestObserver>)
        };
        let stage_op = config
            .stage
            .operator_observed(t, observer(&config.stage, &stage_requests))
            .map_err(|e| op_err(&stage_info, e))?;
        // Over HTTP every request is counted as sent; a local disk or SFTP bills nothing,
        // and its operations are counted one per call.
        let mut stage_client = None;
        let stage: Box<dyn Stage> = if let BackendConfig::S3(_) = &config.stage {
            // Our own signed uploads: every object verified by a server checksum.
            let client = S3Client::for_backend(&config.stage, t)
                .map_err(|e| op_err(&stage_info, e))?
                .with_pacer(pacer.clone());
            stage_client = Some(client.clone());
            Box::new(S3Stage::new(
                client,
                OpendalStage::new(stage_op, stage_info, pacer.clone()),
            ))
        } else if speaks_http(&config.stage) {
            Box::new(
                OpendalStage::new(stage_op, stage_info, pacer.clone())
                    .with_hashes(config.stage.provider_hashes()),
            )
        } else {
            Box::new(Counting::new(
                OpendalStage::new(stage_op, stage_info, pacer.clone())
                    .with_local_root(local_root(&config.stage)),
                stage_requests.clone(),
            ))
        };
        let crypt = match &config.encryption {
            None => None,
            Some(enc) => Some(Arc::new(
                SiteCrypt::open(name, enc, &crate::config::data_dir()).map_err(|e| {
                    op_err(
                        stage.info(),
                        BackendError::Invalid {
                            kind: "encryption",
                            message: e.to_string(),
                        },
                    )
                })?,
            )),
        };
        let stage: Box<dyn Stage> = match &crypt {
            Some(c) => Box::new(SealedStage::new(
                stage,
                c.clone(),
                crate::config::data_dir().join("tmp"),
            )),
            None => stage,
        };
        let archive_op = config
            .archive
            .operator_observed(t, observer(&config.archive, &archive_requests))
            .map_err(|e| op_err(&archive_info, e))?;
        // WebDAV images go up through lomob's own streamed PUT (OpenDAL's writer is one-shot).
        let streamed = match &config.archive {
            BackendConfig::Webdav(w) => Some(
                w.streamed_put(t, pacer.clone())
                    .map_err(|e| op_err(&archive_info, e))?
                    .counted(archive_requests.clone()),
            ),
            _ => None,
        };
        let (archive, archive_client): (Box<dyn Archive>, _) = match &config.archive {
            BackendConfig::S3(_) | BackendConfig::Glacier(_) => {
                let client = S3Client::for_backend(&config.archive, t)
                    .map_err(|e| op_err(&archive_info, e))?
                    .with_pacer(pacer.clone());
                (
                    Box::new(MinStorageGuard::new(S3Archive::new(
                        client.clone(),
                        archive_op,
                        archive_info,
                    ))),
                    Some(client),
                )
            }
            _ => (
                Box::new(MinStorageGuard::new(
                    OpendalArchive::new(archive_op, archive_info, pacer.clone())
                        .with_local_root(local_root(&config.archive))
                        .with_streamed_put(streamed)
                        .with_read_back(
                            matches!(&config.archive, BackendConfig::Fs(f) if f.verify_read_back),
                        ),
                )),
                None,
            ),
        };
        let archive: Box<dyn Archive> = match &crypt {
            Some(c) => Box::new(SealedArchive::new(archive, c.clone())),
            None => archive,
        };
        Ok(Site {
            name: name.to_string(),
            config: config.clone(),
            crypt,
            stage,
            archive,
            stage_requests,
            archive_requests,
            stage_client,
            archive_client,
        })
    }

    /// The stage object of `content` on this site: keyed on an encrypted site.
    pub fn stage_key(&self, content: &[u8; 16]) -> String {
        match &self.crypt {
            Some(c) => c.stage_key(content),
            None => crate::keys::stage_key(content),
        }
    }

    /// Requests sent so far by this site's backends.
    pub fn requests(&self) -> RequestCounts {
        let mut c = self.stage_requests.snapshot();
        c.add(&self.archive_requests.snapshot());
        for client in self.stage_client.iter().chain(&self.archive_client) {
            c.add(&client.counters().snapshot());
        }
        c
    }

    /// The archive's region, for S3 kinds (recorded with each image upload).
    pub fn archive_region(&self) -> String {
        self.config
            .archive
            .s3()
            .map(|c| c.region.clone())
            .unwrap_or_default()
    }

    /// The signed S3 client of the archive, for S3 kinds (thaw tests, multipart checks).
    pub fn archive_client(&self) -> Option<&S3Client> {
        self.archive_client.as_ref()
    }
}

//! The `onedrive` backend: Microsoft OneDrive through OpenDAL's onedrive service.
//!
//! Like Drive, its writer is one-shot, and [`crate::oauth`] handles throttling and tokens
//! under OpenDAL. Tested end to end against a protocol fake of Graph
//! (tests/servers/cloud_fakes.py).

mod config;
mod hashes;

pub use config::OnedriveConfig;
pub use hashes::GraphHashes;

use crate::gdrive::oauth_root_check;
use crate::{build, reveal, BackendError, ByteSize, Capabilities, ChecksumKind};

impl OnedriveConfig {
    pub fn validate(&self) -> Result<(), BackendError> {
        oauth_root_check("onedrive", &self.root)
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            one_shot_limit: Some(self.one_shot_limit.unwrap_or(ByteSize::mb(100))),
            streaming_write: false,
            free_quota: Some(self.free_quota.unwrap_or(ByteSize::gb(5))),
            ..Capabilities::hot(ChecksumKind::ProviderHash)
        }
    }

    pub(crate) fn oauth_client(&self) -> Result<crate::oauth::OAuthClient, BackendError> {
        let k = "onedrive";
        Ok(crate::oauth::OAuthClient {
            provider: "Microsoft",
            token_url: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            client_id: reveal(k, &self.client_id)?,
            client_secret: self
                .client_secret
                .as_ref()
                .map(|s| reveal(k, s))
                .transpose()?,
            refresh_token: reveal(k, &self.refresh_token)?,
            extra: &[("scope", "offline_access Files.ReadWrite")],
        })
    }

    pub fn operator(&self) -> Result<opendal::Operator, BackendError> {
        let k = "onedrive";
        let mut o = vec![
            ("root", self.root.clone()),
            ("client_id", reveal(k, &self.client_id)?),
            ("refresh_token", reveal(k, &self.refresh_token)?),
        ];
        if let Some(s) = &self.client_secret {
            o.push(("client_secret", reveal(k, s)?));
        }
        build(k, "onedrive", o)
    }
}

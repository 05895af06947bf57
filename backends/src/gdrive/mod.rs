//! The `gdrive` backend: Google Drive through OpenDAL's gdrive service.
//!
//! OpenDAL's Drive writer is one-shot (the object is held in memory), so this kind declares a
//! one-shot limit that the engine respects. Throttling, expired access tokens and refused
//! refresh tokens are handled under OpenDAL by [`crate::oauth`]. Tested end to end against a
//! protocol fake of Drive (tests/servers/cloud_fakes.py).

mod config;
mod hashes;

pub use config::GdriveConfig;
pub use hashes::DriveHashes;

use crate::{build, reveal, BackendError, ByteSize, Capabilities, ChecksumKind};

impl GdriveConfig {
    pub fn validate(&self) -> Result<(), BackendError> {
        oauth_root_check("gdrive", &self.root)
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            one_shot_limit: Some(self.one_shot_limit.unwrap_or(ByteSize::mb(100))),
            streaming_write: false,
            free_quota: Some(self.free_quota.unwrap_or(ByteSize::gb(15))),
            ..Capabilities::hot(ChecksumKind::ProviderHash)
        }
    }

    pub(crate) fn oauth_client(&self) -> Result<crate::oauth::OAuthClient, BackendError> {
        let k = "gdrive";
        Ok(crate::oauth::OAuthClient {
            provider: "Google",
            token_url: "https://oauth2.googleapis.com/token",
            client_id: reveal(k, &self.client_id)?,
            client_secret: Some(reveal(k, &self.client_secret)?),
            refresh_token: reveal(k, &self.refresh_token)?,
            extra: &[],
        })
    }

    pub fn operator(&self) -> Result<opendal::Operator, BackendError> {
        let k = "gdrive";
        build(
            k,
            "gdrive",
            vec![
                ("root", self.root.clone()),
                ("client_id", reveal(k, &self.client_id)?),
                ("client_secret", reveal(k, &self.client_secret)?),
                ("refresh_token", reveal(k, &self.refresh_token)?),
            ],
        )
    }
}

/// Drive-like services address folders by absolute path.
pub(crate) fn oauth_root_check(kind: &'static str, root: &str) -> Result<(), BackendError> {
    if !root.starts_with('/') {
        return Err(BackendError::invalid(
            kind,
            format!("`root` {root:?} must be an absolute folder path such as \"/lomob\""),
        ));
    }
    Ok(())
}

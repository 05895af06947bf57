//! Profile section for `kind = "onedrive"`.

use serde::{Deserialize, Serialize};

use crate::{ByteSize, Secret};

/// A OneDrive folder, reached with an Azure app registration and a refresh token (see the
/// README for how to obtain one).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OnedriveConfig {
    /// Folder path inside the drive. Default `/lomob`.
    #[serde(default = "default_root")]
    pub root: String,
    /// Application (client) id of your Azure app registration.
    pub client_id: Secret,
    /// Client secret; personal "public client" registrations may leave it out.
    pub client_secret: Option<Secret>,
    /// Refresh token with the `Files.ReadWrite offline_access` scopes.
    pub refresh_token: Secret,
    /// Files larger than this skip this stage (one-shot writer). Default 100MB.
    pub one_shot_limit: Option<ByteSize>,
    /// Free allowance to stay under. Default 5GB.
    pub free_quota: Option<ByteSize>,
}

fn default_root() -> String {
    "/lomob".to_string()
}

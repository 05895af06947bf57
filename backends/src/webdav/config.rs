//! Profile section for `kind = "webdav"`.

use serde::{Deserialize, Serialize};

use crate::{ByteSize, Secret};

/// A WebDAV share (Synology, QNAP, Nextcloud, rclone serve webdav...).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WebdavConfig {
    /// Server URL, e.g. `https://nas.local:5006`. Required.
    pub endpoint: String,
    /// Folder under the endpoint. Default `/lomob`.
    #[serde(default = "default_root")]
    pub root: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Bearer token, for servers that use one instead of a password.
    pub token: Option<Secret>,
    /// Files larger than this skip this stage (one-shot writer). Default 1GB.
    pub one_shot_limit: Option<ByteSize>,
}

fn default_root() -> String {
    "/lomob".to_string()
}

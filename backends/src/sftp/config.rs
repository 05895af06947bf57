//! Profile section for `kind = "sftp"`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How to treat the server's host key.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHosts {
    /// Refuse unknown or changed host keys (default: a relative's machine should be known).
    #[default]
    Strict,
    /// Accept and remember a new host key; refuse a changed one.
    Add,
    /// Accept anything. Only for test servers.
    Accept,
}

/// A folder on a machine reachable over SSH with key login.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SftpConfig {
    /// `host`, `host:port` or `ssh://host:port`. Required.
    pub host: String,
    /// Login name. Required.
    pub user: String,
    /// Private key file (key login only; password login is not supported by the client).
    pub key: Option<PathBuf>,
    /// Absolute folder on the server. Required.
    pub root: String,
    #[serde(default)]
    pub known_hosts: KnownHosts,
}

//! The `sftp` backend: a relative's machine over SSH, through OpenDAL's sftp service (which
//! drives the system `ssh` client and streams writes).

mod config;

pub use config::{KnownHosts, SftpConfig};

use crate::{build, BackendError, Capabilities, ChecksumKind};

impl SftpConfig {
    pub fn validate(&self) -> Result<(), BackendError> {
        if cfg!(windows) {
            return Err(BackendError::invalid(
                "sftp",
                "sftp sites drive the system `ssh` client, which lomob can do only on Linux and macOS: on Windows use a `webdav` or `s3` site on the same machine, or an `fs` site on a mapped network folder",
            ));
        }
        if self.host.trim().is_empty() || self.user.trim().is_empty() {
            return Err(BackendError::invalid(
                "sftp",
                "`host` and `user` are required",
            ));
        }
        if !self.root.starts_with('/') {
            return Err(BackendError::invalid(
                "sftp",
                format!(
                    "`root` {:?} must be an absolute path on the server",
                    self.root
                ),
            ));
        }
        Ok(())
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities::hot(ChecksumKind::None)
    }

    pub fn endpoint(&self) -> String {
        if self.host.starts_with("ssh://") {
            self.host.clone()
        } else {
            format!("ssh://{}", self.host)
        }
    }

    pub fn operator(&self) -> Result<opendal::Operator, BackendError> {
        let mut o = vec![
            ("endpoint", self.endpoint()),
            ("user", self.user.clone()),
            ("root", self.root.clone()),
            (
                "known_hosts_strategy",
                match self.known_hosts {
                    KnownHosts::Strict => "strict",
                    KnownHosts::Add => "add",
                    KnownHosts::Accept => "accept",
                }
                .to_string(),
            ),
        ];
        if let Some(k) = &self.key {
            o.push((
                "key",
                crate::secret::expand_home(k).to_string_lossy().into_owned(),
            ));
        }
        build("sftp", "sftp", o)
    }
}

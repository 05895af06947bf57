//! The `fs` backend: a local disk or a mounted NAS folder, through OpenDAL's fs service.

mod config;

pub use config::FsConfig;

use crate::{build, BackendError, Capabilities, ChecksumKind};

impl FsConfig {
    pub fn validate(&self) -> Result<(), BackendError> {
        if self.root.as_os_str().is_empty() {
            return Err(BackendError::invalid(
                "fs",
                "`root` is empty: give the folder to write to",
            ));
        }
        Ok(())
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities::hot(ChecksumKind::ReadBack)
    }

    /// The folder objects go to: `~/` expanded, relative paths from the current folder.
    pub fn resolved_root(&self) -> Result<std::path::PathBuf, BackendError> {
        let root = crate::secret::expand_home(&self.root);
        Ok(if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| {
                    BackendError::invalid("fs", format!("cannot resolve {}: {e}", root.display()))
                })?
                .join(root)
        })
    }

    pub fn operator(&self) -> Result<opendal::Operator, BackendError> {
        let root = self.resolved_root()?;
        build(
            "fs",
            "fs",
            vec![("root", root.to_string_lossy().into_owned())],
        )
    }
}

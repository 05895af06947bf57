//! Profile section for `kind = "fs"`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A local folder: another disk, or a NAS share mounted on this machine.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FsConfig {
    /// The folder objects go under. Required; `~/` is expanded. Created when missing.
    pub root: PathBuf,
}

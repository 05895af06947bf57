//! Profile section for `kind = "fs"`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A local folder: another disk, or a NAS share mounted on this machine.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FsConfig {
    /// The folder objects go under. Required; `~/` is expanded. Created when missing.
    pub root: PathBuf,
    /// Read each archived image back from the disk itself (O_DIRECT, past the page cache)
    /// before it counts: a check of the medium. Off by default: an image written whole by
    /// one run is checked by the SHA-256 of the bytes as they are written, then fsynced; one
    /// continued from an earlier run's partial object is always read back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_read_back: bool,
}

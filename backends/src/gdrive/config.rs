//! Profile section for `kind = "gdrive"`.

use serde::{Deserialize, Serialize};

use crate::{ByteSize, Secret};

/// A Google Drive folder, reached with an OAuth client and a refresh token (see the README
/// for how to obtain one).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GdriveConfig {
    /// Folder path inside the drive, e.g. `/lomob`. Default `/lomob`.
    #[serde(default = "default_root")]
    pub root: String,
    /// OAuth client id and secret of your own Google Cloud project (Desktop app type).
    pub client_id: Secret,
    pub client_secret: Secret,
    /// Long-lived refresh token for that client, with the `drive.file` or `drive` scope.
    pub refresh_token: Secret,
    /// Files larger than this are not staged here (the writer holds the whole object in
    /// memory); they go straight into the next archive image. Default 100MB.
    pub one_shot_limit: Option<ByteSize>,
    /// Free allowance to stay under. Default 15GB (Google's free tier, shared with mail).
    pub free_quota: Option<ByteSize>,
}

fn default_root() -> String {
    "/lomob".to_string()
}

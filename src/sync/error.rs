//! What can go wrong in a sync, with the kind the caller acts on (retry, alert, stop and
//! explain). Each variant keeps the typed error it came from; the message says what to do.

use lomob_backends::ErrorKind;

use super::mark::MarkError;
use crate::manifest::ManifestError;
use crate::pack::PackError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Mark(#[from] MarkError),
    #[error(transparent)]
    Pack(#[from] PackError),
    /// The upload journal, or a backend call made outside a stage or archive.
    #[error(transparent)]
    Backend(#[from] lomob_backends::BackendError),
    /// A local file or folder of lomob's own (a temporary folder, a snapshot file).
    #[error("{path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
    /// A problem the sync found itself, with its kind.
    #[error("{message}")]
    Found { kind: ErrorKind, message: String },
}

impl SyncError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Store(e) => e.kind(),
            SyncError::Manifest(_) | SyncError::Pack(_) => ErrorKind::Other,
            SyncError::Backend(e) => e.kind(),
            SyncError::Mark(MarkError::Store(e)) => e.kind(),
            SyncError::Mark(MarkError::Manifest(_)) => ErrorKind::Other,
            SyncError::Mark(MarkError::Unsteady { .. }) => ErrorKind::Transient,
            SyncError::Mark(_) => ErrorKind::Config,
            SyncError::Local { source, .. } => lomob_backends::error::io_kind(source),
            SyncError::Found { kind, .. } => *kind,
        }
    }

    pub(super) fn found(kind: ErrorKind, message: impl Into<String>) -> Self {
        SyncError::Found {
            kind,
            message: message.into(),
        }
    }

    pub(super) fn local(path: &std::path::Path, source: std::io::Error) -> Self {
        SyncError::Local {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;

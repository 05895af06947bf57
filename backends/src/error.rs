//! Errors from turning a profile section into a working backend.
//!
//! Each carries a kind the engine acts on: a configuration problem stops and explains, a
//! transient one is retried, a permission or missing-bucket problem is reported per site.

use crate::secret::SecretError;

/// What the engine should do about a backend error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The profile is wrong or incomplete: stop and tell the user what to change.
    Config,
    /// Network trouble or a server hiccup: retry later.
    Transient,
    /// Credentials rejected or access denied: stop this site and alert.
    Permission,
    /// The bucket, container or folder does not exist.
    NotFound,
    /// The object is in cold storage and must be thawed before it can be read.
    Frozen,
    /// Anything else the backend said.
    Other,
}

/// An error about one backend of one site.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{kind} backend: {message}")]
    Invalid { kind: &'static str, message: String },
    #[error("{kind} backend: {source}")]
    Secret {
        kind: &'static str,
        source: SecretError,
    },
    #[error("{kind} backend: {source}")]
    Opendal {
        kind: &'static str,
        source: opendal::Error,
    },
}

impl BackendError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BackendError::Invalid { .. } | BackendError::Secret { .. } => ErrorKind::Config,
            BackendError::Opendal { source, .. } => classify(source),
        }
    }

    pub(crate) fn invalid(kind: &'static str, message: impl Into<String>) -> Self {
        BackendError::Invalid {
            kind,
            message: message.into(),
        }
    }
}

/// Maps an OpenDAL error onto the kinds the engine acts on.
pub fn classify(e: &opendal::Error) -> ErrorKind {
    use opendal::ErrorKind as K;
    if e.is_temporary() {
        return ErrorKind::Transient;
    }
    match e.kind() {
        K::ConfigInvalid => ErrorKind::Config,
        K::PermissionDenied => ErrorKind::Permission,
        K::NotFound => ErrorKind::NotFound,
        K::RateLimited => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

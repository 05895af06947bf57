//! Errors from turning a profile section into a working backend.
//!
//! Each carries a kind the engine acts on: a configuration problem stops and explains, a
//! transient one is retried, a permission or missing-bucket problem is reported per site.

use crate::secret::SecretError;

/// What the engine should do about a backend error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
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
    /// Bytes are not what they must be: a server holds other bytes than were sent, a
    /// checksum differs, a file changed under an upload. Alert; never count it as safe.
    Integrity,
    /// No space left: a full disk, a quota reached.
    Space,
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
    /// A signed S3 request of our own (multipart, restore, HEAD) failed.
    #[error(transparent)]
    S3(Box<S3Error>),
    /// The data being uploaded could not be read (the engine's image reader or a file).
    #[error("reading the data for {key} at byte {offset}: {source}")]
    Source {
        key: String,
        offset: u64,
        source: std::io::Error,
    },
    /// The upload journal (where resumable uploads remember their parts) failed.
    #[error("upload journal: {0}")]
    Journal(String),
    /// The server holds something other than what was sent (a wrong ETag), or the source
    /// no longer matches an interrupted upload.
    #[error("checking {key}: {message}")]
    Check { key: String, message: String },
    /// lomob refused to do it (a delete before the minimum storage duration, a key that
    /// could leave the site): nothing was sent.
    #[error("{message}")]
    Refused { message: String },
    /// An HTTP request of our own (a WebDAV streamed PUT) failed.
    #[error("{backend} backend: {op} {path}: {}{message}", status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
    Http {
        backend: &'static str,
        op: &'static str,
        path: String,
        status: Option<u16>,
        message: String,
        kind: ErrorKind,
    },
    /// A local file or folder failed (writing a download, a temporary file).
    #[error("{path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
}

/// One failed S3 request, with what the engine needs to act on it. The message names the
/// operation, bucket and key, never a credential.
#[derive(Debug)]
pub struct S3Error {
    /// The backend kind (`s3` or `glacier`).
    pub backend: &'static str,
    /// The S3 operation, e.g. `UploadPart`.
    pub op: &'static str,
    pub bucket: String,
    /// The object key (or prefix), empty for bucket-level calls.
    pub key: String,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// S3's error code, e.g. `NoSuchUpload`, when the server sent one.
    pub code: Option<String>,
    /// What happened and, where we know, what to do about it.
    pub message: String,
    pub kind: ErrorKind,
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} backend: {} s3://{}/{}: ",
            self.backend, self.op, self.bucket, self.key
        )?;
        match (self.status, &self.code) {
            (Some(s), Some(c)) => write!(f, "HTTP {s} {c}: ")?,
            (Some(s), None) => write!(f, "HTTP {s}: ")?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for S3Error {}

impl BackendError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BackendError::Invalid { .. } | BackendError::Secret { .. } => ErrorKind::Config,
            BackendError::Opendal { source, .. } => classify(source),
            BackendError::S3(e) => e.kind,
            BackendError::Http { kind, .. } => *kind,
            BackendError::Check { .. } => ErrorKind::Integrity,
            BackendError::Source { source, .. } => match source.kind() {
                std::io::ErrorKind::InvalidData => ErrorKind::Integrity,
                _ => ErrorKind::Other,
            },
            BackendError::Local { source, .. } => io_kind(source),
            BackendError::Journal(_) | BackendError::Refused { .. } => ErrorKind::Other,
        }
    }

    /// The S3 error code (`NoSuchUpload`, `InvalidObjectState`...) when there is one.
    /// OpenDAL's S3 errors carry the code only in their text; the codes the engine acts on
    /// are recognised there too.
    pub fn s3_code(&self) -> Option<&str> {
        match self {
            BackendError::S3(e) => e.code.as_deref(),
            BackendError::Opendal { source, .. } => {
                let text = source.to_string();
                [
                    "InvalidAccessKeyId",
                    "SignatureDoesNotMatch",
                    "AccessDenied",
                    "NoSuchBucket",
                    "InvalidObjectState",
                ]
                .into_iter()
                .find(|c| text.contains(c))
            }
            _ => None,
        }
    }

    pub(crate) fn invalid(kind: &'static str, message: impl Into<String>) -> Self {
        BackendError::Invalid {
            kind,
            message: message.into(),
        }
    }
}

/// What a local I/O error means for the engine.
pub fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => ErrorKind::Space,
        std::io::ErrorKind::PermissionDenied => ErrorKind::Permission,
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::InvalidData => ErrorKind::Integrity,
        _ => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<opendal::Error>())
        {
            Some(o) => classify(o),
            None => ErrorKind::Other,
        },
    }
}

/// Maps an OpenDAL error onto the kinds the engine acts on.
pub fn classify(e: &opendal::Error) -> ErrorKind {
    use opendal::ErrorKind as K;
    // A pinned receiver (`lomob serve`) that shows another certificate: never a network
    // hiccup to retry, but a machine that is not the one paired.
    if format!("{e:?}").contains(crate::tls::PIN_MISMATCH) {
        return ErrorKind::Permission;
    }
    if e.is_temporary() {
        return ErrorKind::Transient;
    }
    // After its retries, OpenDAL reports a failed connection as a persistent `Unexpected`
    // error; the request never reached a server, so it is still network trouble.
    if e.kind() == K::Unexpected {
        let text = format!("{e:?}").to_ascii_lowercase();
        if [
            "error sending request",
            "connection refused",
            "dns error",
            "timed out",
            "connection reset",
            // OpenDAL's timeout layer, after its retries.
            "timeout reached",
            // SFTP (openssh): the connection could not be made or was lost mid-session.
            "failed to connect to the remote host",
            "remote process has terminated",
            "broken pipe",
            "unexpected end of file",
            // openssh-sftp-client: the session's I/O task ended under a write.
            "read/flush task failed",
        ]
        .iter()
        .any(|w| text.contains(w))
        {
            return ErrorKind::Transient;
        }
    }
    // A full drive: Drive's 403 storageQuotaExceeded, Graph's 507 quotaLimitReached.
    let text = format!("{e:?}");
    if [
        "No space left on device",
        "storageQuotaExceeded",
        "quotaLimitReached",
        "storage quota has been exceeded",
        // A peer receiver (`lomob serve`): its per-sender quota, its disk.
        "QuotaExceeded",
        "InsufficientStorage",
    ]
    .iter()
    .any(|w| text.contains(w))
    {
        return ErrorKind::Space;
    }
    match e.kind() {
        K::ConfigInvalid => ErrorKind::Config,
        K::PermissionDenied => ErrorKind::Permission,
        K::NotFound => ErrorKind::NotFound,
        K::RateLimited => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// The error and its causes on one line (reqwest hides the useful part in the chain).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the chaos suite (#15): an SFTP run cut off by a stalled or reset connection
    /// ended as "other" (exit 1) instead of "a server kept failing, run again later".
    #[test]
    fn lost_connections_and_timeouts_after_retries_are_transient() {
        for text in [
            "io operation timeout reached",
            "ssh error, source: failed to connect to the remote host",
            "Failed to create sftp from session: the remote process has terminated",
            "Broken pipe (os error 32)",
            "unexpected end of file",
            "other error, source: Background task failed: read/flush task failed.",
        ] {
            let e = opendal::Error::new(opendal::ErrorKind::Unexpected, text);
            assert_eq!(classify(&e), ErrorKind::Transient, "{text}");
        }
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "something else");
        assert_eq!(classify(&e), ErrorKind::Other);
    }
}

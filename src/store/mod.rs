//! What the [`crate::stage::Stage`] and [`crate::archive::Archive`] traits share: object
//! descriptions, an error that names the site, role, operation and key and carries a kind
//! the engine acts on (retry, alert, abort), and (from the backends) request counting.

pub mod direct;

use lomob_backends::{BackendError, Capabilities, ErrorKind};
use serde::Serialize;

/// What a stage or archive says about one object: one type with the backends.
pub use lomob_backends::ObjectInfo;

/// Which half of a site an object or error belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Stage,
    Archive,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Stage => "stage",
            Role::Archive => "archive",
        })
    }
}

/// Who a backend is: for messages, and for what the engine may ask of it.
#[derive(Clone, Debug, Serialize)]
pub struct BackendInfo {
    pub site: String,
    pub role: Role,
    pub kind: &'static str,
    pub capabilities: Capabilities,
    /// Where objects go, for display: a folder, `s3://bucket/prefix`, a URL.
    pub location: String,
}

/// A failed operation on one backend of one site.
#[derive(Debug, thiserror::Error)]
#[error("site {site}, {role} ({backend}): {op}{}: {source}", if key.is_empty() { String::new() } else { format!(" {key}") })]
pub struct StoreError {
    pub site: String,
    pub role: Role,
    pub backend: &'static str,
    pub op: &'static str,
    pub key: String,
    #[source]
    pub source: Box<BackendError>,
}

impl StoreError {
    pub fn new(info: &BackendInfo, op: &'static str, key: &str, source: BackendError) -> Self {
        StoreError {
            site: info.site.clone(),
            role: info.role,
            backend: info.kind,
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    pub fn opendal(info: &BackendInfo, op: &'static str, key: &str, e: opendal::Error) -> Self {
        Self::new(
            info,
            op,
            key,
            BackendError::Opendal {
                kind: info.kind,
                source: e,
            },
        )
    }

    /// Bytes that are not what they must be (a size or checksum mismatch, an object
    /// missing right after its upload): an integrity problem.
    pub fn check(info: &BackendInfo, op: &'static str, key: &str, message: String) -> Self {
        Self::new(
            info,
            op,
            key,
            BackendError::Check {
                key: key.to_string(),
                message,
            },
        )
    }

    /// An object missing right after it was written: the server lost it, or never kept it.
    pub fn missing_after_write(info: &BackendInfo, key: &str) -> Self {
        Self::check(
            info,
            "verify",
            key,
            "missing right after it was written: the server did not keep it; the next run sends it again".into(),
        )
    }

    /// Something lomob refuses to do (a delete before the minimum storage duration, a key
    /// that could leave the site).
    pub fn refused(info: &BackendInfo, op: &'static str, key: &str, message: String) -> Self {
        Self::new(info, op, key, BackendError::Refused { message })
    }

    /// An encrypted site's keys do not fit: none configured, or not one an object was
    /// encrypted to. The profile's to fix.
    pub fn encryption(info: &BackendInfo, key: &str, message: String) -> Self {
        Self::new(
            info,
            "decrypt",
            key,
            BackendError::Invalid {
                kind: "encryption",
                message,
            },
        )
    }

    /// An encrypted object that does not decrypt: altered, damaged or cut short.
    pub fn undecryptable(info: &BackendInfo, key: &str, e: impl std::fmt::Display) -> Self {
        Self::check(
            info,
            "decrypt",
            key,
            format!("{e}; nothing was written from it"),
        )
    }

    /// Why an object's header did not open: the keys' fault, or the object's.
    pub fn unopened(info: &BackendInfo, key: &str, e: crate::crypt::HeaderError) -> Self {
        match e {
            crate::crypt::HeaderError::NoMatchingIdentity => Self::encryption(
                info,
                key,
                format!("{e}: the identity in the profile is not one this object was encrypted to (a wrong key file?)"),
            ),
            e => Self::undecryptable(info, key, e),
        }
    }

    /// A local file failed (a download's destination): a full disk is told apart.
    pub fn local(
        info: &BackendInfo,
        op: &'static str,
        key: &str,
        path: &std::path::Path,
        e: std::io::Error,
    ) -> Self {
        Self::new(
            info,
            op,
            key,
            BackendError::Local {
                path: path.display().to_string(),
                source: e,
            },
        )
    }

    /// A failure while reading an object's stream: its kind is the backend error inside
    /// (a dropped connection is transient).
    pub fn stream(info: &BackendInfo, op: &'static str, key: &str, e: std::io::Error) -> Self {
        // A chunk of an encrypted object that fails authentication: the bytes are wrong.
        if let Some(d) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::crypt::DecryptError>())
        {
            return Self::undecryptable(info, key, d);
        }
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<opendal::Error>())
        {
            Some(_) => {
                let inner = e
                    .into_inner()
                    .and_then(|b| b.downcast::<opendal::Error>().ok())
                    .map(|b| *b);
                match inner {
                    Some(o) => Self::opendal(info, op, key, o),
                    None => Self::check(info, op, key, "the object stream failed".into()),
                }
            }
            None => Self::new(
                info,
                op,
                key,
                BackendError::Local {
                    path: key.to_string(),
                    source: e,
                },
            ),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.source.kind()
    }

    /// The read error behind a failed upload, when the data being sent could not be read
    /// (for an image: a file that changed under it, as an `IsoError` inside).
    pub fn source_io(&self) -> Option<&std::io::Error> {
        match self.source.as_ref() {
            BackendError::Source { source, .. } => Some(source),
            _ => None,
        }
    }

    /// A local file failed (a download's destination), not the backend: another copy of
    /// the same bytes would fail the same way.
    pub fn is_local(&self) -> bool {
        matches!(self.source.as_ref(), BackendError::Local { .. })
    }

    /// Worth trying again later (network trouble, a server hiccup).
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }
}

/// Makes a write to a local disk durable before it is recorded: fsyncs the folder that
/// holds `key` under `root`, so its name (a new file, or a rename into place) survives a
/// power cut. The file's own bytes are fsynced by the writer when it closes.
pub fn sync_parent(
    info: &BackendInfo,
    root: &std::path::Path,
    key: &str,
) -> Result<(), StoreError> {
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root);
    crate::platform::file::sync_dir(dir).map_err(|e| StoreError::local(info, "sync", key, dir, e))
}

/// Refuses a key that could escape the backend's root (`..`, an absolute path, control
/// characters): keys may come from an imported manifest or a downloaded snapshot, and the
/// SFTP and WebDAV services join root and key as they are.
pub fn confine(info: &BackendInfo, op: &'static str, key: &str) -> Result<(), StoreError> {
    if crate::keys::is_confined(key) {
        Ok(())
    } else {
        Err(StoreError::refused(
            info,
            op,
            key,
            "refused: the key is not a plain relative path inside the site (it could reach outside it)".into(),
        ))
    }
}

/// The whole object `key` as a stream of `chunk`-sized pieces, in bounded memory. `what`
/// names the operation in errors; the stream's own items fail with `io::Error`.
pub async fn object_stream(
    op: &opendal::Operator,
    info: &BackendInfo,
    what: &'static str,
    key: &str,
    chunk: usize,
) -> Result<opendal::FuturesBytesStream, StoreError> {
    op.reader_with(key)
        .chunk(chunk)
        .await
        .map_err(|e| StoreError::opendal(info, what, key, e))?
        .into_bytes_stream(..)
        .await
        .map_err(|e| StoreError::opendal(info, what, key, e))
}

/// The bytes of `range` of `key` with one request, streamed in bounded memory (a large
/// span of an image: one GET instead of many ranged ones).
pub async fn range_stream(
    op: &opendal::Operator,
    info: &BackendInfo,
    key: &str,
    range: std::ops::Range<u64>,
) -> Result<opendal::FuturesBytesStream, StoreError> {
    op.reader(key)
        .await
        .map_err(|e| StoreError::opendal(info, "read", key, e))?
        .into_bytes_stream(range)
        .await
        .map_err(|e| StoreError::opendal(info, "read", key, e))
}

/// Requests as providers bill them: one type for the engine and the backends.
pub use lomob_backends::{RequestCounters, RequestCounts, RequestType};

/// Every object under `prefix` through OpenDAL, recursively, without a request per object.
pub(crate) async fn list_objects(
    op: &opendal::Operator,
    info: &BackendInfo,
    prefix: &str,
) -> Result<Vec<ObjectInfo>, StoreError> {
    use futures::TryStreamExt;
    let mut out = Vec::new();
    let mut lister = match op.lister_with(prefix).recursive(true).await {
        Ok(l) => l,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::opendal(info, "list", prefix, e)),
    };
    while let Some(entry) = lister
        .try_next()
        .await
        .map_err(|e| StoreError::opendal(info, "list", prefix, e))?
    {
        if !entry.metadata().is_dir() {
            out.push(ObjectInfo::from_opendal(entry.path(), entry.metadata()));
        }
    }
    Ok(out)
}

/// What a store found when it re-read an object in place ([`crate::stage::Stage::verify_in_place`], [`crate::archive::Archive::verify_in_place`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InPlace {
    /// The SHA-256 (hex) the store took when it received the object.
    pub received: String,
    /// The SHA-256 (hex) of the bytes it holds now.
    pub now: String,
}

impl InPlace {
    pub fn intact(&self) -> bool {
        self.received == self.now
    }
}

impl InPlace {
    /// Asks a lomob receiver (`lomob serve`) to re-read `key` on its disk: `None` when the
    /// client does not talk to one, or the server does not answer the question.
    pub async fn ask(
        client: &lomob_backends::s3::S3Client,
        info: &BackendInfo,
        key: &str,
    ) -> Result<Option<InPlace>, StoreError> {
        if !client.is_peer() {
            return Ok(None);
        }
        confine(info, "verify", key)?;
        let head = client
            .head_object_rehashed(key)
            .await
            .map_err(|e| StoreError::new(info, "verify", key, e))?;
        use base64::Engine as _;
        let received = head
            .checksum_sha256
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(hex::encode);
        Ok(match (received, head.rehashed_sha256) {
            (Some(received), Some(now)) => Some(InPlace { received, now }),
            _ => None,
        })
    }
}

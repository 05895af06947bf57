//! Error type of the ISO module.
//!
//! One `thiserror` enum so that callers (the uploader, restore, checks) can match on what went
//! wrong. Streaming errors travel through `std::io::Read`, so they are wrapped in an
//! `io::Error` whose inner error is an `IsoError`; [`IsoError::from_io`] recovers it.

use std::path::PathBuf;

/// Everything the ISO writer, reader and extractor can report.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// An I/O error on a named file on disk (source file, extraction target).
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An I/O error while reading an image (offset where the read was attempted).
    #[error("I/O error reading the image at byte {offset}: {source}")]
    ImageIo {
        offset: u64,
        #[source]
        source: std::io::Error,
    },

    /// A source file no longer matches what was planned (size or SHA-256). The image being
    /// streamed would not match its catalog, so streaming stops.
    #[error("source file changed while packing {path} ({source_path}): {reason}")]
    SourceChanged {
        /// Index of the file in the list given to the plan (`None` for the catalog).
        input: Option<usize>,
        /// Path inside the image (lossy UTF-8 for display).
        path: String,
        /// Where the content was read from.
        source_path: PathBuf,
        reason: String,
    },

    /// A source file could not be opened for a reason other than being gone (permissions,
    /// an I/O error): the image cannot be streamed while it is in it.
    #[error("cannot read {source_path} (for {path} in the image): {source}")]
    SourceUnreadable {
        /// Index of the file in the list given to the plan.
        input: usize,
        /// Path inside the image (lossy UTF-8 for display).
        path: String,
        source_path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The image is not a valid (or not a supported) ISO 9660 image.
    #[error("malformed image at byte {offset}: {reason}")]
    Malformed { reason: String, offset: u64 },

    /// A path component is longer than 255 bytes.
    #[error("name too long ({len} bytes, at most 255) in path {path}")]
    NameTooLong { path: String, len: usize },

    /// A path is not acceptable (empty component, `.`/`..`, absolute, NUL, ...).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    /// The same path was given twice.
    #[error("duplicate path {path}")]
    DuplicatePath { path: String },

    /// A path is used both as a file and as a directory.
    #[error("path {path} is both a file and a directory")]
    FileDirConflict { path: String },

    /// A limit of the format was exceeded (e.g. more than 65535 directories, image over 8 TiB).
    #[error("ISO format limit exceeded: {0}")]
    Limit(String),

    /// The embedded catalog could not be produced or parsed.
    #[error("catalog error: {0}")]
    Catalog(String),

    /// Extraction refused a path that would escape the target directory.
    #[error("unsafe path in image, refused: {path} ({reason})")]
    UnsafePath { path: String, reason: String },

    /// A requested path is not in the image.
    #[error("not found in image: {path}")]
    NotFound { path: String },
}

impl IsoError {
    /// As an `io::Error` (for `Read` implementations). A source that changed is
    /// `InvalidData`: its bytes are not the planned ones, and never will be, so an upload
    /// of the image can be abandoned rather than resumed.
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self {
            IsoError::SourceChanged { .. } => std::io::ErrorKind::InvalidData,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, self)
    }

    /// Returns the `IsoError` carried inside an `io::Error`, if any.
    pub fn from_io(err: &std::io::Error) -> Option<&IsoError> {
        err.get_ref().and_then(|e| e.downcast_ref::<IsoError>())
    }

    /// The index (in the list given to the plan) of the source file that stopped an image
    /// from streaming, if that is what this error is.
    pub fn failed_input(&self) -> Option<usize> {
        match self {
            IsoError::SourceChanged { input, .. } => *input,
            IsoError::SourceUnreadable { input, .. } => Some(*input),
            _ => None,
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>, offset: u64) -> Self {
        IsoError::Malformed {
            reason: reason.into(),
            offset,
        }
    }
}

/// Lossy display form of a raw path (paths inside images are bytes, maybe non-UTF-8).
pub(crate) fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

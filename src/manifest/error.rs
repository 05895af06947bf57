//! Errors of the manifest. The database library's own error types stay inside this module.

use std::path::PathBuf;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {path} is in use by another lomob process (pid {pid}): wait for it to finish, or stop it")]
    InUse { path: PathBuf, pid: String },
    #[error("manifest {path} has schema version {found}, but this lomob understands up to {supported}: upgrade lomob")]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot open manifest {path}: {source}")]
    Open { path: PathBuf, source: Source },
    #[error("manifest database error: {0}")]
    Db(Source),
    #[error("manifest record {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest export {path}, line {line}: {reason}")]
    BadExport {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0} is not a lomob manifest but a folder holding other files: give --db a new or empty folder")]
    NotAManifest(PathBuf),
    #[error("the manifest at {0} already holds records; import only into an empty manifest (choose a new --db path)")]
    NotEmpty(PathBuf),
    #[error("the manifest at {0} holds an import that did not finish (the process was stopped?): run `lomob manifest import FILE` (or `lomob recover`) again, which starts it over")]
    ImportUnfinished(PathBuf),
}

impl From<sled::Error> for ManifestError {
    fn from(e: sled::Error) -> Self {
        ManifestError::Db(Box::new(e))
    }
}

impl From<sled::transaction::TransactionError<ManifestError>> for ManifestError {
    fn from(e: sled::transaction::TransactionError<ManifestError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => e.into(),
        }
    }
}

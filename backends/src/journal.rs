//! Where resumable uploads remember their parts between runs. The engine keeps the journal
//! in its manifest; [`JsonFileJournal`] (tests and examples, feature `testing`) in a file.

#[cfg(any(test, feature = "testing"))]
use std::collections::BTreeMap;
#[cfg(any(test, feature = "testing"))]
use std::fs::File;
#[cfg(any(test, feature = "testing"))]
use std::path::PathBuf;
#[cfg(any(test, feature = "testing"))]
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::BackendError;

/// A finished part, as the journal remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonePart {
    pub number: u32,
    pub size: u64,
    /// As the server returned it, quotes included.
    pub etag: String,
    /// Hex MD5 of the part's bytes.
    pub md5: String,
}

/// Everything needed to continue an upload after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    pub key: String,
    pub upload_id: String,
    pub part_size: u64,
    pub total_size: u64,
    /// The source's SHA-256 when the caller gave one (metadata `sha256`): a changed source
    /// must not be completed from old parts.
    pub source_sha256: Option<String>,
    /// Finished parts, by number.
    pub parts: Vec<DonePart>,
}

/// Where upload states are kept between runs. The engine stores them in its manifest;
/// [`JsonFileJournal`] keeps them in a file.
pub trait UploadJournal: Send + Sync {
    fn load(&self, key: &str) -> Result<Option<UploadState>, BackendError>;
    /// Replaces the state of `state.key`. Must be durable when it returns.
    fn save(&self, state: &UploadState) -> Result<(), BackendError>;
    fn clear(&self, key: &str) -> Result<(), BackendError>;
    /// Every upload in progress, to tell ours from orphans.
    fn list(&self) -> Result<Vec<UploadState>, BackendError>;
}

#[cfg(any(test, feature = "testing"))]
/// A journal in one JSON file, replaced atomically (write, fsync, rename) on every save so a
/// kill at any moment leaves either the old or the new state.
#[derive(Debug)]
pub struct JsonFileJournal {
    path: PathBuf,
    lock: Mutex<()>,
}

#[cfg(any(test, feature = "testing"))]
impl JsonFileJournal {
    pub fn new(path: impl Into<PathBuf>) -> JsonFileJournal {
        JsonFileJournal {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    fn read(&self) -> Result<BTreeMap<String, UploadState>, BackendError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                BackendError::Journal(format!("{} is not a journal: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(BackendError::Journal(format!(
                "cannot read {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn write(&self, all: &BTreeMap<String, UploadState>) -> Result<(), BackendError> {
        let err = |e: std::io::Error| {
            BackendError::Journal(format!("cannot write {}: {e}", self.path.display()))
        };
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(all)
            .map_err(|e| BackendError::Journal(format!("cannot encode the journal: {e}")))?;
        {
            let mut f = File::create(&tmp).map_err(err)?;
            std::io::Write::write_all(&mut f, &text).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    fn update(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, UploadState>),
    ) -> Result<(), BackendError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = self.read()?;
        f(&mut all);
        self.write(&all)
    }
}

#[cfg(any(test, feature = "testing"))]
impl UploadJournal for JsonFileJournal {
    fn load(&self, key: &str) -> Result<Option<UploadState>, BackendError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.read()?.remove(key))
    }

    fn save(&self, state: &UploadState) -> Result<(), BackendError> {
        self.update(|all| {
            all.insert(state.key.clone(), state.clone());
        })
    }

    fn clear(&self, key: &str) -> Result<(), BackendError> {
        self.update(|all| {
            all.remove(key);
        })
    }

    fn list(&self) -> Result<Vec<UploadState>, BackendError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.read()?.into_values().collect())
    }
}

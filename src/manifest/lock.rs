//! One process at a time per manifest, with a message that says who holds it.
//!
//! sled takes its own lock, but its error does not say who holds it. We take an exclusive
//! lock (`File::try_lock`: `flock` on Unix, `LockFileEx` on Windows) on `lomob.lock` inside
//! the database folder first and write our pid into it; the system drops the lock when the
//! process dies, even after `kill -9`, so it is never stale.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::ManifestError;

pub(crate) struct DbLock {
    _file: File,
}

impl DbLock {
    pub(crate) fn acquire(db_dir: &Path) -> Result<DbLock, ManifestError> {
        let path = db_dir.join("lomob.lock");
        let io = |source| ManifestError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(ManifestError::InUse {
                    path: db_dir.to_path_buf(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.into()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DbLock { _file: file })
    }
}

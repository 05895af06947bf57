//! Where restored files land, and how: never outside the target folder, never through a
//! link, never under the real name before the bytes are proven. Each file is written under
//! a temporary name beside its final place, its SHA-256 and size checked against the
//! manifest, its mode and mtime set, and only then renamed into place.

use std::fs::{File, FileTimes, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::platform::file::{self, PortableOpenOptions as _};
use crate::platform::names;

/// The final place of a file restored into `dir`: `dir` followed by the original absolute
/// path. Refuses names that could leave `dir` or cannot be a file name: empty, `.` or `..`
/// components, NUL bytes.
pub fn place(dir: &Path, original: &[u8]) -> Result<PathBuf, String> {
    let rel = names::relative_path(original);
    let rel = rel.as_slice();
    if rel.is_empty() {
        return Err("an empty path".into());
    }
    let mut out = dir.to_path_buf();
    for c in rel.split(|&b| b == b'/') {
        match c {
            b"" => return Err("an empty path component (`//`)".into()),
            b"." | b".." => return Err("a `.` or `..` component".into()),
            _ if c.contains(&0) => return Err("a NUL byte".into()),
            _ if c.len() > 255 => return Err("a name longer than 255 bytes".into()),
            // On Windows `\` is a separator and `a:b` names a hidden stream of `a`: either
            // would put bytes elsewhere than the name says.
            _ if cfg!(windows) && names::windows_refuses(c) => {
                return Err(
                    "a character Windows does not allow in a name (\\ : * ? \" < > |)".into(),
                )
            }
            _ => out.push(names::os_str(c)),
        }
    }
    Ok(out)
}

/// What is already at a file's final place.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    Absent,
    /// A regular file with exactly the wanted bytes (hashed, not judged by size and date).
    Identical,
    /// Something else: left alone unless `--overwrite`, and reported.
    Different(String),
}

/// Looks at `path` without following a link.
pub fn existing(path: &Path, size: u64, sha256: &[u8; 32]) -> std::io::Result<Existing> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) if file::is_not_a_directory(&e) => {
            return Ok(Existing::Different(
                "a file is where a folder must be".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    if md.file_type().is_symlink() {
        return Ok(Existing::Different("a link".into()));
    }
    if !md.is_file() {
        return Ok(Existing::Different("not a regular file".into()));
    }
    if md.len() != size {
        return Ok(Existing::Different(format!(
            "{} bytes, not {size}",
            md.len()
        )));
    }
    let (sha, _) = hash_file(path)?;
    Ok(if &sha == sha256 {
        Existing::Identical
    } else {
        Existing::Different("other bytes of the same size".into())
    })
}

fn hash_file(path: &Path) -> std::io::Result<([u8; 32], u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok((h.finalize().into(), n));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// Creates the folders from `dir` down to `path`'s parent, refusing to pass through a link
/// or anything that is not a folder (a hostile tree must not redirect a restore).
pub fn make_parent(dir: &Path, path: &Path) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(dir);
    let rel = parent.strip_prefix(dir).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is outside {}", path.display(), dir.display()),
        )
    })?;
    let mut cur = dir.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} is a link or a file, not a folder", cur.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&cur) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        // Made meanwhile by a parallel download; checked again below.
                        if !std::fs::symlink_metadata(&cur)?.is_dir() {
                            return Err(e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The temporary name of a file being restored: in the same folder (so the rename is
/// atomic), hidden, short enough for any name, and the same on a rerun.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(names::os_bytes).unwrap_or_default();
    let tag = hex::encode(&Sha256::digest(name)[..8]);
    path.with_file_name(format!(".lomob-restore-{tag}.tmp"))
}

/// Why a written file was not put in place.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the bytes received are not the ones backed up ({message}); nothing was written under its name")]
    Mismatch { path: PathBuf, message: String },
}

/// A file being written under its temporary name, hashed as it goes.
pub struct Incoming {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<std::io::BufWriter<File>>,
    hash: Sha256,
    written: u64,
}

impl Incoming {
    /// Starts `path` (its folders must exist): the temporary file is created afresh, never
    /// through a link.
    pub fn create(path: &Path) -> Result<Incoming, WriteError> {
        let tmp = temp_name(path);
        let io = |source| WriteError::Io {
            path: tmp.clone(),
            source,
        };
        clear_temp(path).map_err(io)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .owner_only()
            .no_follow()
            .open(&tmp)
            .map_err(io)?;
        Ok(Incoming {
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            tmp,
            path: path.to_path_buf(),
            hash: Sha256::new(),
            written: 0,
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        self.hash.update(buf);
        self.written += buf.len() as u64;
        let io = |source| WriteError::Io {
            path: self.tmp.clone(),
            source,
        };
        match self.file.as_mut() {
            Some(f) => f.write_all(buf).map_err(io),
            None => Err(io(std::io::Error::other("already finished"))),
        }
    }

    /// Checks size and SHA-256, sets mode and mtime, and renames the file into place. On a
    /// mismatch the temporary file is removed and the real name never touched.
    pub fn finish(
        mut self,
        size: u64,
        sha256: &[u8; 32],
        mtime_ns: i64,
        mode: u32,
    ) -> Result<(), WriteError> {
        let tmp = self.tmp.clone();
        let io = |source| WriteError::Io {
            path: tmp.clone(),
            source,
        };
        let file = match self.file.take() {
            Some(f) => f.into_inner().map_err(|e| io(e.into_error()))?,
            None => return Err(io(std::io::Error::other("already finished"))),
        };
        let got: [u8; 32] = std::mem::take(&mut self.hash).finalize().into();
        check(&self.path, (got, self.written), size, sha256)?;
        // Drop removes the temporary name: after the rename there is nothing left there.
        settle(file, &tmp, &self.path, mtime_ns, mode)
    }
}

/// A size or SHA-256 that is not the wanted one is an integrity error.
fn check(
    path: &Path,
    got: ([u8; 32], u64),
    size: u64,
    sha256: &[u8; 32],
) -> Result<(), WriteError> {
    if got.1 == size && &got.0 == sha256 {
        return Ok(());
    }
    Err(WriteError::Mismatch {
        path: path.to_path_buf(),
        message: if got.1 != size {
            format!("{} bytes, not {size}", got.1)
        } else {
            format!(
                "SHA-256 {}, not {}",
                hex::encode(got.0),
                hex::encode(sha256)
            )
        },
    })
}

/// Gives a checked temporary file its mode and mtime and renames it into place.
fn settle(file: File, tmp: &Path, path: &Path, mtime_ns: i64, mode: u32) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    // Permission bits only: a restore never makes set-user-id files.
    file::set_mode(&file, mode).map_err(io)?;
    file.set_times(FileTimes::new().set_modified(time_of(mtime_ns)))
        .map_err(io)?;
    drop(file);
    std::fs::rename(tmp, path).map_err(io)
}

/// Puts in place a file downloaded whole to `temp_name(path)` whose size and SHA-256 were
/// computed while it was written (a staged copy): checked against the wanted ones first.
pub fn adopt(
    path: &Path,
    got: ([u8; 32], u64),
    size: u64,
    sha256: &[u8; 32],
    mtime_ns: i64,
    mode: u32,
) -> Result<(), WriteError> {
    let tmp = temp_name(path);
    if let Err(e) = check(path, got, size, sha256) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let file = OpenOptions::new()
        .write(true)
        .no_follow()
        .open(&tmp)
        .map_err(|source| WriteError::Io {
            path: tmp.clone(),
            source,
        })?;
    settle(file, &tmp, path, mtime_ns, mode)
}

/// Removes what a crash may have left at `path`'s temporary name (never following a link).
pub fn clear_temp(path: &Path) -> std::io::Result<()> {
    let tmp = temp_name(path);
    match std::fs::symlink_metadata(&tmp) {
        Ok(_) => std::fs::remove_file(&tmp),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Finished files were renamed away; an unfinished one is removed.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn time_of(ns: i64) -> std::time::SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Writes a copy of the restored file `from` at `path` (another path with the same
/// content), checked like any other.
pub fn copy_restored(
    from: &Path,
    path: &Path,
    size: u64,
    sha256: &[u8; 32],
    mtime_ns: i64,
    mode: u32,
) -> Result<(), WriteError> {
    let mut inc = Incoming::create(path)?;
    let mut f = File::open(from).map_err(|source| WriteError::Io {
        path: from.to_path_buf(),
        source,
    })?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).map_err(|source| WriteError::Io {
            path: from.to_path_buf(),
            source,
        })?;
        if k == 0 {
            break;
        }
        inc.write(&buf[..k])?;
    }
    inc.finish(size, sha256, mtime_ns, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_folder_are_refused() {
        let dir = Path::new("/r");
        assert_eq!(place(dir, b"/a/b.jpg").unwrap(), Path::new("/r/a/b.jpg"));
        assert_eq!(place(dir, b"a/b.jpg").unwrap(), Path::new("/r/a/b.jpg"));
        for bad in [
            &b"/a/../../etc/passwd"[..],
            b"/a/./b",
            b"/a//b",
            b"/a/b\0c",
            b"/",
            b"",
        ] {
            assert!(
                place(dir, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_wrong_file_never_takes_the_real_name() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.jpg");
        let mut inc = Incoming::create(&p).unwrap();
        inc.write(b"evil").unwrap();
        let err = inc
            .finish(4, &Sha256::digest(b"good").into(), 0, 0o644)
            .unwrap_err();
        assert!(matches!(err, WriteError::Mismatch { .. }), "{err}");
        assert!(!p.exists());
        assert!(!temp_name(&p).exists());
    }

    #[test]
    fn a_good_file_lands_with_its_mtime_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.jpg");
        let mut inc = Incoming::create(&p).unwrap();
        inc.write(b"good").unwrap();
        inc.finish(
            4,
            &Sha256::digest(b"good").into(),
            1_600_000_000_123_456_789,
            0o640,
        )
        .unwrap();
        let md = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(md.permissions().mode() & 0o777, 0o640);
        assert_eq!(
            md.modified().unwrap(),
            UNIX_EPOCH + Duration::from_nanos(1_600_000_000_123_456_789)
        );
        assert_eq!(
            existing(&p, 4, &Sha256::digest(b"good").into()).unwrap(),
            Existing::Identical
        );
        assert!(matches!(
            existing(&p, 4, &Sha256::digest(b"bad!").into()).unwrap(),
            Existing::Different(_)
        ));
    }

    #[test]
    fn folders_are_not_made_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("x")).unwrap();
        let err = make_parent(d.path(), &d.path().join("x/y/z.jpg")).unwrap_err();
        assert!(err.to_string().contains("link"), "{err}");
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }
}

//! Verification against the embedded catalog, and safe extraction.
//!
//! Extraction never writes outside the target directory: paths with empty, "." or ".."
//! components, absolute paths and NUL bytes are refused; every directory on the way is
//! created or checked to be a real directory (not a symlink); an existing file at a target is
//! removed and recreated (so a planted symlink or hard link is never written through); Rock
//! Ridge symlinks in the image are not created.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{lossy, IsoError};
use super::reader::{Entry, IsoImage};

/// A file whose content or placement does not match the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub path: Vec<u8>,
    pub reason: String,
}

/// Result of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files listed in the catalog.
    pub checked: usize,
    /// Files whose size, offset and SHA-256 match.
    pub ok: usize,
    pub mismatches: Vec<Mismatch>,
    /// In the catalog, not in the image.
    pub missing: Vec<Vec<u8>>,
    /// In the image, not in the catalog (the catalog itself excluded).
    pub unexpected: Vec<Vec<u8>>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.mismatches.is_empty() && self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// A `Write` that only hashes.
struct HashSink(Sha256);

impl Write for HashSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks every file of the catalog against the image: present, same size, data at the
/// recorded offset, same SHA-256. Fails only if the image or its catalog cannot be read.
pub fn verify<R: Read + Seek>(img: &mut IsoImage<R>) -> Result<VerifyReport, IsoError> {
    let catalog = img
        .catalog()?
        .ok_or_else(|| IsoError::Catalog("the image has no LOMOB/CATALOG.JSON".into()))?;
    let entries = img.entries()?;
    let mut by_path: HashMap<&[u8], &Entry> = entries
        .iter()
        .filter(|e| !e.is_dir)
        .map(|e| (e.path.as_slice(), e))
        .collect();
    by_path.remove(super::catalog::CATALOG_PATH);
    let mut report = VerifyReport::default();
    for f in &catalog.files {
        report.checked += 1;
        let Some(path) = f.raw_path() else {
            report.mismatches.push(Mismatch {
                path: Vec::new(),
                reason: "catalog entry without a path".into(),
            });
            continue;
        };
        let Some(e) = by_path.remove(path.as_slice()) else {
            report.missing.push(path);
            continue;
        };
        let mut bad = |reason: String| {
            report.mismatches.push(Mismatch {
                path: path.clone(),
                reason,
            })
        };
        if e.size != f.size {
            bad(format!("size {} in image, {} in catalog", e.size, f.size));
            continue;
        }
        if f.size > 0 && e.data_offset() != Some(f.offset) {
            bad(format!(
                "data at {:?} in image, {} in catalog",
                e.data_offset(),
                f.offset
            ));
            continue;
        }
        let mut sink = HashSink(Sha256::new());
        img.read_file(e, &mut sink)?;
        let got: [u8; 32] = sink.0.finalize().into();
        if Some(got) != f.sha256_bytes() {
            bad(format!(
                "SHA-256 {} in image, {} in catalog",
                hex::encode(got),
                f.sha256
            ));
            continue;
        }
        report.ok += 1;
    }
    let mut extra: Vec<Vec<u8>> = by_path.into_keys().map(<[u8]>::to_vec).collect();
    extra.sort();
    report.unexpected = extra;
    Ok(report)
}

/// Result of an extraction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    pub files: usize,
    pub dirs: usize,
    pub bytes: u64,
    /// Entries not extracted, with the reason (unsafe paths, symlinks).
    pub skipped: Vec<(Vec<u8>, String)>,
}

/// Extracts every file and directory into `to_dir` (created if needed).
pub fn extract_all<R: Read + Seek>(
    img: &mut IsoImage<R>,
    to_dir: &Path,
) -> Result<ExtractReport, IsoError> {
    let entries = img.entries()?;
    extract_entries(img, &entries, to_dir)
}

/// Extracts the given paths (files, or directories with everything below them).
pub fn extract_paths<R: Read + Seek>(
    img: &mut IsoImage<R>,
    paths: &[Vec<u8>],
    to_dir: &Path,
) -> Result<ExtractReport, IsoError> {
    let entries = img.entries()?;
    for p in paths {
        if !entries.iter().any(|e| &e.path == p) {
            return Err(IsoError::NotFound { path: lossy(p) });
        }
    }
    let wanted: Vec<Entry> = entries
        .into_iter()
        .filter(|e| {
            paths.iter().any(|p| {
                e.path == *p || (e.path.starts_with(p) && e.path.get(p.len()) == Some(&b'/'))
            })
        })
        .collect();
    extract_entries(img, &wanted, to_dir)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IsoError + '_ {
    move |e| IsoError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn os_component(c: &[u8]) -> std::ffi::OsString {
    crate::platform::names::os_str(c).into_owned()
}

/// Validated components of an entry path, or why it is refused.
fn safe_components(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path[0] == b'/' {
        return Err("absolute path".into());
    }
    if path.contains(&0) {
        return Err("NUL byte".into());
    }
    let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    for c in &comps {
        if c.is_empty() || *c == b"." || *c == b".." {
            return Err("empty, '.' or '..' component".into());
        }
        if cfg!(windows) && crate::platform::names::windows_refuses(c) {
            return Err("a character Windows does not allow in a name (\\ : * ? \" < > |)".into());
        }
    }
    Ok(comps)
}

/// Creates (or checks) each directory of `comps` below `root`; never follows a symlink.
fn make_dirs(root: &Path, comps: &[&[u8]]) -> Result<PathBuf, IsoError> {
    let mut cur = root.to_path_buf();
    for c in comps {
        cur.push(os_component(c));
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(IsoError::UnsafePath {
                    path: cur.display().to_string(),
                    reason: "exists and is not a directory (or is a symlink)".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(io_err(&cur))?
            }
            Err(e) => return Err(io_err(&cur)(e)),
        }
    }
    Ok(cur)
}

fn extract_entries<R: Read + Seek>(
    img: &mut IsoImage<R>,
    entries: &[Entry],
    to_dir: &Path,
) -> Result<ExtractReport, IsoError> {
    fs::create_dir_all(to_dir).map_err(io_err(to_dir))?;
    let root = to_dir.canonicalize().map_err(io_err(to_dir))?;
    let mut report = ExtractReport::default();
    for e in entries {
        let comps = match safe_components(&e.path) {
            Ok(c) => c,
            Err(reason) => {
                report.skipped.push((e.path.clone(), reason));
                continue;
            }
        };
        if e.is_symlink() {
            report
                .skipped
                .push((e.path.clone(), "symbolic link".into()));
            continue;
        }
        if e.is_dir {
            make_dirs(&root, &comps)?;
            report.dirs += 1;
            continue;
        }
        let (name, parents) = comps.split_last().ok_or_else(|| IsoError::UnsafePath {
            path: lossy(&e.path),
            reason: "empty path".into(),
        })?;
        let dir = make_dirs(&root, parents)?;
        let target = dir.join(os_component(name));
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {
                return Err(IsoError::UnsafePath {
                    path: target.display().to_string(),
                    reason: "a directory is in the way".into(),
                })
            }
            // Remove rather than overwrite: never write through a symlink or hard link.
            Ok(_) => fs::remove_file(&target).map_err(io_err(&target))?,
            Err(_) => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(io_err(&target))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        report.bytes += img.read_file(e, &mut w)?;
        let file: File = w
            .into_inner()
            .map_err(|e| io_err(&target)(e.into_error()))?;
        if let Some(m) = e.mode {
            set_mode(&file, m);
        }
        let t = if e.mtime >= 0 {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.mtime as u64)
        } else {
            std::time::UNIX_EPOCH - std::time::Duration::from_secs(e.mtime.unsigned_abs())
        };
        let _ = file.set_modified(t); // best effort
        report.files += 1;
    }
    Ok(report)
}

fn set_mode(file: &File, mode: u32) {
    // Permission bits only; never set-id bits from an untrusted image.
    let _ = crate::platform::file::set_mode(file, mode & 0o777);
}

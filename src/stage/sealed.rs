//! [`Stage`] for an encrypted site: every object written through `put_file` (staged copies,
//! manifest snapshots) leaves the machine as an age object, and every download is
//! decrypted and authenticated before its bytes reach the destination.
//!
//! The ciphertext is written to a temporary file first, so the wrapped stage uploads and
//! verifies it exactly as it would a plain file: the server's checksums (an MD5 ETag,
//! `x-amz-checksum-sha256`) are then of the ciphertext, and a check compares them without
//! decrypting anything. The plaintext is checked against its scanned SHA-256 while it is
//! encrypted, so a file that changed since the scan is never stored.
//!
//! Objects that are not age objects (written before encryption was turned on) are read as
//! they are; the site mark (`put_bytes`) stays plain so a machine holding only public keys
//! can tell whose key space it is.

use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use lomob_backends::source::ByteSource;
use lomob_backends::BackendError;
use sha2::{Digest, Sha256};

use super::checked::CheckedFile;
use super::{Stage, Usage};
use crate::crypt::{parse_header, HeaderError, SiteCrypt, StreamDecryptor};
use crate::store::{BackendInfo, ObjectInfo, StoreError};

pub struct SealedStage {
    inner: Box<dyn Stage>,
    crypt: Arc<SiteCrypt>,
    tmp: PathBuf,
}

impl SealedStage {
    /// `tmp` holds ciphertext on its way up and down (never plaintext).
    pub fn new(inner: Box<dyn Stage>, crypt: Arc<SiteCrypt>, tmp: PathBuf) -> Self {
        SealedStage { inner, crypt, tmp }
    }

    fn temp(&self, op: &'static str, key: &str) -> Result<tempfile::NamedTempFile, StoreError> {
        std::fs::create_dir_all(&self.tmp)
            .and_then(|()| tempfile::NamedTempFile::new_in(&self.tmp))
            .map_err(|e| StoreError::local(self.info(), op, key, &self.tmp, e))
    }
}

/// Encrypts `source` into `out`; returns the ciphertext's length and SHA-256.
fn encrypt_to(
    source: &dyn ByteSource,
    out: &mut std::fs::File,
) -> std::io::Result<(u64, [u8; 32])> {
    let mut r = source.open_at(0)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        len += n as u64;
    }
    w.flush()?;
    Ok((len, sha.finalize().into()))
}

/// Why a downloaded object could not be decrypted.
enum Open {
    Io(std::io::Error),
    /// No identity configured: the profile's to fix.
    Key(String),
    /// The header did not open (a wrong key, or a damaged header).
    Header(HeaderError),
    /// Not a well-formed, authentic age object.
    Bad(String),
}

/// Decrypts the age object in `from` into `to`; returns the plaintext's SHA-256 and
/// length. Nothing is left in `to` unless every chunk authenticated.
fn decrypt_file(crypt: &SiteCrypt, from: &Path, to: &Path) -> Result<([u8; 32], u64), Open> {
    let mut input = std::fs::File::open(from).map_err(Open::Io)?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let (header, rest) = loop {
        let n = input.read(&mut buf).map_err(Open::Io)?;
        head.extend_from_slice(&buf[..n]);
        match parse_header(&head) {
            Ok((h, rest)) => break (h, rest.to_vec()),
            Err(HeaderError::Truncated) if n > 0 => continue,
            Err(e) => return Err(Open::Bad(e.to_string())),
        }
    };
    let ids = crypt.identities().map_err(|e| Open::Key(e.to_string()))?;
    let key = header.unwrap_with(ids).map_err(Open::Header)?;
    let mut d = StreamDecryptor::with_key(key);
    let file = std::fs::File::create(to).map_err(Open::Io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut sha = Sha256::new();
    let mut len = 0u64;
    let mut plain = Vec::with_capacity(2 << 20);
    let mut emit = |plain: &mut Vec<u8>| -> Result<(), Open> {
        sha.update(&plain[..]);
        len += plain.len() as u64;
        out.write_all(plain).map_err(Open::Io)?;
        plain.clear();
        Ok(())
    };
    let mut pending = rest;
    loop {
        d.update(&pending, &mut plain)
            .map_err(|e| Open::Bad(e.to_string()))?;
        emit(&mut plain)?;
        let n = input.read(&mut buf).map_err(Open::Io)?;
        if n == 0 {
            break;
        }
        pending = buf[..n].to_vec();
    }
    d.finish(&mut plain).map_err(|e| Open::Bad(e.to_string()))?;
    emit(&mut plain)?;
    out.flush().map_err(Open::Io)?;
    Ok((sha.finalize().into(), len))
}

#[async_trait]
impl Stage for SealedStage {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<ObjectInfo, StoreError> {
        let tmp = self.temp("put", key)?;
        let source = self.crypt.seal_fresh(Arc::new(CheckedFile {
            path: path.to_path_buf(),
            size,
            sha256: *sha256,
        }));
        let mut file = tmp
            .reopen()
            .map_err(|e| StoreError::local(self.info(), "put", key, tmp.path(), e))?;
        let sealed = tokio::task::spawn_blocking(move || encrypt_to(&source, &mut file))
            .await
            .map_err(|e| {
                StoreError::local(self.info(), "put", key, path, std::io::Error::other(e))
            })?;
        let (len, sha) = sealed.map_err(|e| {
            // The source file's problem (changed, unreadable): the file's, not the stage's.
            StoreError::new(
                self.info(),
                "put",
                key,
                BackendError::Source {
                    key: path.display().to_string(),
                    offset: 0,
                    source: e,
                },
            )
        })?;
        self.inner.put_file(key, tmp.path(), len, &sha).await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<ObjectInfo, StoreError> {
        self.inner.put_bytes(key, bytes).await
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.inner.stat(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.inner.read_range(key, range).await
    }

    /// The ciphertext is what the store holds and hashes.
    async fn verify_in_place(
        &self,
        key: &str,
    ) -> Result<Option<crate::store::InPlace>, StoreError> {
        self.inner.verify_in_place(key).await
    }

    async fn download(&self, key: &str, dest: &Path) -> Result<([u8; 32], u64), StoreError> {
        let cipher = self.temp("download", key)?;
        let got = self.inner.download(key, cipher.path()).await?;
        let mut magic = [0u8; 22];
        let n = std::fs::File::open(cipher.path())
            .and_then(|mut f| f.read(&mut magic))
            .map_err(|e| StoreError::local(self.info(), "download", key, cipher.path(), e))?;
        if !crate::crypt::is_age(&magic[..n]) {
            // Stored before encryption was turned on: plain, as it always was. Moved into
            // place; copied only when the destination is on another file system.
            if let Err(e) = cipher.persist(dest) {
                std::fs::copy(e.file.path(), dest)
                    .map_err(|e| StoreError::local(self.info(), "download", key, dest, e))?;
            }
            return Ok(got);
        }
        let crypt = self.crypt.clone();
        let (from, to) = (cipher.path().to_path_buf(), dest.to_path_buf());
        let opened = tokio::task::spawn_blocking(move || decrypt_file(&crypt, &from, &to))
            .await
            .map_err(|e| {
                StoreError::local(self.info(), "download", key, dest, std::io::Error::other(e))
            })?;
        match opened {
            Ok(v) => Ok(v),
            Err(e) => {
                let _ = std::fs::remove_file(dest);
                Err(match e {
                    Open::Io(e) => StoreError::local(self.info(), "download", key, dest, e),
                    Open::Key(message) => StoreError::encryption(self.info(), key, message),
                    Open::Header(e) => StoreError::unopened(self.info(), key, e),
                    Open::Bad(message) => StoreError::undecryptable(self.info(), key, message),
                })
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    async fn abort_orphans(&self) -> Result<u64, StoreError> {
        self.inner.abort_orphans().await
    }

    async fn usage(&self, prefix: &str) -> Result<Usage, StoreError> {
        self.inner.usage(prefix).await
    }
}

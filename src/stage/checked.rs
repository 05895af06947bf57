//! A local file as a [`ByteSource`] that checks itself against its scanned SHA-256 while it
//! is read, so no upload fed by it completes with bytes the manifest does not describe.

use std::io::Read;
use std::path::PathBuf;

use lomob_backends::source::ByteSource;
use sha2::{Digest, Sha256};

/// A file as a [`ByteSource`] that checks itself while read from its first byte: a read
/// that would hand out its last byte fails instead (`InvalidData`) when the bytes read are
/// not the scanned ones, so an upload fed by it never completes with a changed file.
pub struct CheckedFile {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
}

impl ByteSource for CheckedFile {
    fn len(&self) -> u64 {
        self.size
    }

    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(CheckingReader {
            file,
            left: self.size - offset.min(self.size),
            sha: (offset == 0).then(Sha256::new),
            want: self.sha256,
            path: self.path.clone(),
        }))
    }
}

struct CheckingReader {
    file: std::fs::File,
    left: u64,
    /// `None` when opened past the first byte (nothing to check the whole against).
    sha: Option<Sha256>,
    want: [u8; 32],
    path: PathBuf,
}

impl Read for CheckingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let changed = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} {what} since it was scanned", self.path.display()),
            )
        };
        if self.left == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(changed("is shorter than it was"));
        }
        self.left -= n as u64;
        if let Some(sha) = &mut self.sha {
            sha.update(&buf[..n]);
            if self.left == 0 {
                let got: [u8; 32] = sha.clone().finalize().into();
                if got != self.want {
                    return Err(changed("changed (its content differs)"));
                }
                if self.file.read(&mut [0u8; 1])? > 0 {
                    return Err(changed("grew"));
                }
            }
        }
        Ok(n)
    }
}

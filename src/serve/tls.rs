//! The receiver's certificate: made at first start, kept, and never replaced by lomob.
//!
//! No authority signs it; pairing carries its SHA-256 instead and every sender pins it
//! ([`lomob_backends::tls`]). So the files are precious in their own way: lose them and
//! every sender refuses the receiver (loudly) until it pairs again.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lomob_backends::tls::{fingerprint, provider, Fingerprint};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::platform::file::PortableOpenOptions as _;

const CERT: &str = "cert.der";
const KEY: &str = "key.der";

/// The receiver's certificate and private key.
pub struct Identity {
    pub cert: Vec<u8>,
    key: Vec<u8>,
    pub fingerprint: Fingerprint,
}

impl Identity {
    /// Reads the certificate kept in `dir`, or makes one when there is none. A key without
    /// its certificate (or the reverse) is an error, never silently replaced: senders pin it.
    pub fn load_or_create(dir: &Path) -> Result<Identity, String> {
        let (cert_path, key_path) = (dir.join(CERT), dir.join(KEY));
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert = read(&cert_path)?;
                let key = read(&key_path)?;
                Ok(Identity {
                    fingerprint: fingerprint(&cert),
                    cert,
                    key,
                })
            }
            (false, false) => Self::create(dir, &cert_path, &key_path),
            _ => Err(format!(
                "{} holds only one of {CERT} and {KEY}: the receiver's certificate is damaged. Restore both files from a backup; only if they are lost for good, remove both (a new certificate is made, and every sender must pair again)",
                dir.display()
            )),
        }
    }

    fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<Identity, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let host = hostname();
        let made = rcgen::generate_simple_self_signed(vec![host.clone(), "lomob-receiver".into()])
            .map_err(|e| format!("cannot make a certificate: {e}"))?;
        let cert = made.cert.der().to_vec();
        let key = made.signing_key.serialize_der();
        // The key first: a crash between the two leaves a key alone, which the next start
        // reports instead of making a second certificate some sender may already pin.
        write_new(key_path, &key)?;
        write_new(cert_path, &cert)?;
        tracing::info!(host, "made the receiver's certificate");
        Ok(Identity {
            fingerprint: fingerprint(&cert),
            cert,
            key,
        })
    }

    /// The TLS server configuration: this certificate, HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(vec![CertificateDer::from(self.cert.clone())], key)
            })
            .map_err(|e| format!("the receiver's certificate cannot be used: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Writes a file that must not exist yet, readable by its owner only, synced.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .owner_only()
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// This machine's name, for the certificate's subject (informative only: senders pin the
/// fingerprint, not the name).
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "localhost".into())
}

/// The folder the receiver keeps its own state in, under its root.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join(".lomob-serve")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        a.server_config().unwrap();
        std::fs::remove_file(dir.path().join(CERT)).unwrap();
        let e = Identity::load_or_create(dir.path()).err().unwrap();
        assert!(e.contains("damaged"), "{e}");
    }
}

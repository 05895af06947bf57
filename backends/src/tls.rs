//! Certificate pinning for a peer receiver (`lomob serve`).
//!
//! A relative's receiver has a self-signed certificate: no authority vouches for it, and
//! asking people to click through a warning teaches them to accept anything. Pairing
//! carries the certificate's SHA-256 instead, and a site with `tls-fingerprint` accepts
//! that one certificate and no other (hostname and expiry are not what identifies it).
//! A receiver replaced by another machine, or a man in the middle, fails the handshake
//! with an error that says so.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER bytes.
pub type Fingerprint = [u8; 32];

/// The words a pin mismatch starts with: the error classification looks for them, so a
/// replaced receiver is reported as such and never retried as a network fault.
pub const PIN_MISMATCH: &str = "certificate fingerprint mismatch";

pub fn fingerprint(cert_der: &[u8]) -> Fingerprint {
    Sha256::digest(cert_der).into()
}

/// `sha256:` and 64 lowercase hex digits, as profiles and `serve status` show it.
pub fn format_fingerprint(fp: &Fingerprint) -> String {
    format!("sha256:{}", hex::encode(fp))
}

/// Reads `sha256:<64 hex digits>` (colons between byte pairs and upper case allowed, as
/// other tools print fingerprints).
pub fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    let hexits: String = s
        .trim()
        .strip_prefix("sha256:")
        .unwrap_or(s.trim())
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let mut fp = [0u8; 32];
    hex::decode_to_slice(hexits.to_ascii_lowercase(), &mut fp).map_err(|_| {
        format!("{s:?} is not a certificate fingerprint (expected sha256: and 64 hex digits)")
    })?;
    Ok(fp)
}

/// The crypto provider every lomob TLS endpoint uses (rustls may see two compiled in).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS client configuration that accepts only the certificate whose SHA-256 is `pin`.
pub fn pinned_config(pin: Fingerprint) -> Result<rustls::ClientConfig, String> {
    prefix_pinned_config(&pin)
}

/// A TLS client configuration that accepts only a certificate whose SHA-256 starts with
/// `prefix` (pairing: the code carries the first bytes; the answer gives the whole).
pub fn prefix_pinned_config(prefix: &[u8]) -> Result<rustls::ClientConfig, String> {
    if prefix.len() < 10 {
        return Err("a certificate pin needs at least 10 bytes".into());
    }
    let provider = provider();
    let verifier = Arc::new(Pinned {
        pin: prefix.to_vec(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `builder` with its TLS replaced by the pinned configuration.
pub fn pin_client(
    builder: reqwest::ClientBuilder,
    pin: Fingerprint,
) -> Result<reqwest::ClientBuilder, String> {
    Ok(builder.tls_backend_preconfigured(pinned_config(pin)?))
}

#[derive(Debug)]
struct Pinned {
    pin: Vec<u8>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity.as_ref());
        if got.starts_with(&self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "{PIN_MISMATCH}: the receiver presented {} but this site is paired with {}; \
                 a different machine answers at this address (or the receiver lost its \
                 certificate): nothing was sent. If the receiver was really replaced, pair \
                 again with a new code from `lomob serve pair`",
                format_fingerprint(&got),
                shown_pin(&self.pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn shown_pin(pin: &[u8]) -> String {
    if pin.len() == 32 {
        format!("sha256:{}", hex::encode(pin))
    } else {
        format!("sha256:{}…", hex::encode(pin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_back_in_either_spelling() {
        let fp = fingerprint(b"cert");
        let shown = format_fingerprint(&fp);
        assert_eq!(parse_fingerprint(&shown).unwrap(), fp);
        let colons = hex::encode_upper(fp)
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), fp);
        assert!(parse_fingerprint("sha256:abcd").is_err());
    }
}

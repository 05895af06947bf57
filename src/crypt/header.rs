//! The age header: the version line, one stanza per recipient wrapping the file key, and a
//! MAC over all of it keyed by the file key; lomob writes the 16-byte payload nonce right
//! after it, and treats header plus nonce as the object's prefix.
//!
//! Parsing is strict (canonical base64, 64-column body lines, a bounded size) because the
//! header of a downloaded object is hostile input until its MAC checks.

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keys::{Identity, Recipient};
use super::stream::PayloadKey;
use super::FileKey;

pub(super) const VERSION_LINE: &str = "age-encryption.org/v1\n";
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
pub(super) const SCRYPT_LABEL: &[u8] = b"age-encryption.org/v1/scrypt";
/// No header lomob writes comes near this; a hostile one larger is refused unread.
const MAX_HEADER: usize = 64 << 10;
const MAX_STANZAS: usize = 64;
/// Work factors above this would let a hostile identity file take minutes and gigabytes.
pub(super) const MAX_SCRYPT_LOG_N: u8 = 22;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not an age object (no age-encryption.org/v1 header)")]
    NotAge,
    #[error("the age header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the age header is incomplete (the object was cut short)")]
    Truncated,
    #[error("no identity given opens this object: it was encrypted to other keys")]
    NoMatchingIdentity,
    #[error("the age header's MAC does not match: the object was altered")]
    BadMac,
    #[error("the passphrase is wrong, or the file was altered")]
    BadPassphrase,
    #[error("the scrypt work factor 2^{0} is larger than lomob accepts (2^22)")]
    ScryptTooExpensive(u8),
    #[error("this object is protected by a passphrase; give the passphrase, not an identity")]
    NeedsPassphrase,
}

/// One recipient stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stanza {
    pub kind: String,
    pub args: Vec<String>,
    pub body: Vec<u8>,
}

/// A parsed header, with the payload nonce that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub stanzas: Vec<Stanza>,
    /// The bytes the MAC covers: from the version line through `---`.
    mac_input: Vec<u8>,
    mac: [u8; 32],
    pub nonce: [u8; 16],
    /// Header and nonce: where the first payload chunk starts.
    pub len: u64,
}

impl Header {
    /// Unwraps the file key with the first identity that opens a stanza, checks the MAC,
    /// and derives the payload key.
    pub fn unwrap_with(&self, identities: &[Identity]) -> Result<PayloadKey, HeaderError> {
        if self.stanzas.iter().any(|s| s.kind == "scrypt") {
            return Err(HeaderError::NeedsPassphrase);
        }
        for stanza in self.stanzas.iter().filter(|s| s.kind == "X25519") {
            for id in identities {
                if let Some(file_key) = unwrap_x25519(stanza, id)? {
                    return self.payload_key(&file_key);
                }
            }
        }
        Err(HeaderError::NoMatchingIdentity)
    }

    /// Unwraps a passphrase-protected object (an encrypted identity file).
    pub fn unwrap_passphrase(&self, passphrase: &[u8]) -> Result<PayloadKey, HeaderError> {
        let [stanza] = &self.stanzas[..] else {
            return Err(HeaderError::Malformed(
                "a scrypt stanza must be the only stanza",
            ));
        };
        if stanza.kind != "scrypt" {
            return Err(HeaderError::Malformed("expected a scrypt stanza"));
        }
        let [salt, log_n] = &stanza.args[..] else {
            return Err(HeaderError::Malformed("scrypt stanza arguments"));
        };
        let salt = decode_exact::<16>(salt)?;
        if log_n.starts_with('0') || !log_n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeaderError::Malformed("scrypt work factor"));
        }
        let log_n: u8 = log_n
            .parse()
            .map_err(|_| HeaderError::Malformed("scrypt work factor"))?;
        if log_n > MAX_SCRYPT_LOG_N {
            return Err(HeaderError::ScryptTooExpensive(log_n));
        }
        let key = scrypt_key(passphrase, &salt, log_n)?;
        let file_key = open_body(&key, &stanza.body).ok_or(HeaderError::BadPassphrase)?;
        self.payload_key(&file_key)
    }

    fn payload_key(&self, file_key: &FileKey) -> Result<PayloadKey, HeaderError> {
        let mut mac = header_mac(file_key);
        mac.update(&self.mac_input);
        mac.verify_slice(&self.mac)
            .map_err(|_| HeaderError::BadMac)?;
        Ok(PayloadKey::derive(file_key, &self.nonce))
    }
}

/// The header (with its MAC) for `recipients`, followed by the payload `nonce`.
pub fn write_header(recipients: &[Recipient], file_key: &FileKey, nonce: &[u8; 16]) -> Vec<u8> {
    write_header_seeded(recipients, file_key, nonce, &rand::random())
}

/// As [`write_header`], with the ephemeral keys derived from `seed`: the same inputs give
/// the same header (an interrupted upload regenerates its bytes). The seed must be as
/// secret and as unique per object as the file key.
pub fn write_header_seeded(
    recipients: &[Recipient],
    file_key: &FileKey,
    nonce: &[u8; 16],
    seed: &[u8; 32],
) -> Vec<u8> {
    let hk = Hkdf::<Sha256>::new(Some(b"lomob ephemeral"), seed);
    let stanzas = recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut e = [0u8; 32];
            hk.expand(&(i as u64).to_be_bytes(), &mut e)
                .expect("32 bytes is a valid HKDF length");
            wrap_x25519(r, file_key, e)
        })
        .collect::<Vec<_>>();
    finish_header(&stanzas, file_key, nonce)
}

/// The header of a passphrase-protected object (age's `-p`), with the payload nonce.
pub(super) fn write_scrypt_header(
    passphrase: &[u8],
    log_n: u8,
    file_key: &FileKey,
    nonce: &[u8; 16],
) -> Vec<u8> {
    let salt: [u8; 16] = rand::random();
    let key = scrypt_key(passphrase, &salt, log_n).expect("valid scrypt parameters");
    let stanza = Stanza {
        kind: "scrypt".into(),
        args: vec![B64.encode(salt), log_n.to_string()],
        body: seal_body(&key, file_key),
    };
    finish_header(&[stanza], file_key, nonce)
}

fn finish_header(stanzas: &[Stanza], file_key: &FileKey, nonce: &[u8; 16]) -> Vec<u8> {
    let mut out = VERSION_LINE.as_bytes().to_vec();
    for s in stanzas {
        out.extend_from_slice(b"->");
        for a in std::iter::once(&s.kind).chain(&s.args) {
            out.push(b' ');
            out.extend_from_slice(a.as_bytes());
        }
        out.push(b'\n');
        let body = B64.encode(&s.body);
        let mut rest = body.as_bytes();
        // Full 64-column lines, then a shorter (possibly empty) last one.
        loop {
            let n = rest.len().min(64);
            out.extend_from_slice(&rest[..n]);
            out.push(b'\n');
            rest = &rest[n..];
            if n < 64 {
                break;
            }
        }
    }
    out.extend_from_slice(b"---");
    let mut mac = header_mac(file_key);
    mac.update(&out);
    out.push(b' ');
    out.extend_from_slice(B64.encode(mac.finalize().into_bytes()).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(nonce);
    out
}

/// Parses the header and payload nonce at the start of `bytes`; returns them with the rest
/// (the payload chunks). `Truncated` when more bytes are needed.
pub fn parse_header(bytes: &[u8]) -> Result<(Header, &[u8]), HeaderError> {
    if bytes.len() < VERSION_LINE.len() {
        return if VERSION_LINE.as_bytes().starts_with(bytes) {
            Err(HeaderError::Truncated)
        } else {
            Err(HeaderError::NotAge)
        };
    }
    if !bytes.starts_with(VERSION_LINE.as_bytes()) {
        return Err(HeaderError::NotAge);
    }
    let mut pos = VERSION_LINE.len();
    let line = |pos: &mut usize| -> Result<&[u8], HeaderError> {
        let rest = &bytes[*pos..];
        let limit = MAX_HEADER.saturating_sub(*pos);
        match rest.iter().take(limit).position(|&b| b == b'\n') {
            Some(n) => {
                *pos += n + 1;
                Ok(&rest[..n])
            }
            None if rest.len() >= limit => Err(HeaderError::Malformed("header too large")),
            None => Err(HeaderError::Truncated),
        }
    };
    let mut stanzas = Vec::new();
    let mac_input_end;
    let mac;
    loop {
        let start = pos;
        let l = line(&mut pos)?;
        if let Some(m) = l.strip_prefix(b"--- ") {
            mac_input_end = start + 3;
            let m = std::str::from_utf8(m).map_err(|_| HeaderError::Malformed("MAC"))?;
            mac = decode_exact::<32>(m)?;
            break;
        }
        let Some(args) = l.strip_prefix(b"-> ") else {
            return Err(HeaderError::Malformed("expected a stanza or the MAC line"));
        };
        if stanzas.len() == MAX_STANZAS {
            return Err(HeaderError::Malformed("too many stanzas"));
        }
        let args = std::str::from_utf8(args).map_err(|_| HeaderError::Malformed("stanza"))?;
        let mut args = args.split(' ').map(str::to_string).collect::<Vec<_>>();
        if args
            .iter()
            .any(|a| a.is_empty() || !a.bytes().all(|b| (33..=126).contains(&b)))
        {
            return Err(HeaderError::Malformed("stanza arguments"));
        }
        let kind = args.remove(0);
        let mut body = String::new();
        loop {
            let l = line(&mut pos)?;
            let l = std::str::from_utf8(l).map_err(|_| HeaderError::Malformed("stanza body"))?;
            if l.len() > 64 {
                return Err(HeaderError::Malformed("stanza body line longer than 64"));
            }
            body.push_str(l);
            if l.len() < 64 {
                break;
            }
        }
        let body = decode_canonical(&body)?;
        stanzas.push(Stanza { kind, args, body });
    }
    if stanzas.is_empty() {
        return Err(HeaderError::Malformed("no recipient stanza"));
    }
    let Some(nonce) = bytes.get(pos..pos + 16) else {
        return Err(HeaderError::Truncated);
    };
    let header = Header {
        stanzas,
        mac_input: bytes[..mac_input_end].to_vec(),
        mac,
        nonce: nonce.try_into().expect("16 bytes"),
        len: (pos + 16) as u64,
    };
    Ok((header, &bytes[pos + 16..]))
}

fn decode_canonical(s: &str) -> Result<Vec<u8>, HeaderError> {
    let v = B64
        .decode(s)
        .map_err(|_| HeaderError::Malformed("base64"))?;
    // Only the canonical encoding: no two headers with the same meaning.
    if B64.encode(&v) != s {
        return Err(HeaderError::Malformed("non-canonical base64"));
    }
    Ok(v)
}

fn decode_exact<const N: usize>(s: &str) -> Result<[u8; N], HeaderError> {
    decode_canonical(s)?
        .try_into()
        .map_err(|_| HeaderError::Malformed("wrong length"))
}

fn header_mac(file_key: &FileKey) -> Hmac<Sha256> {
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(None, file_key)
        .expand(b"header", &mut key)
        .expect("32 bytes is a valid HKDF length");
    Hmac::<Sha256>::new_from_slice(&key).expect("any key length")
}

fn seal_body(key: &[u8; 32], file_key: &FileKey) -> Vec<u8> {
    let aead = ChaCha20Poly1305::new(&(*key).into());
    let mut buf = file_key.to_vec();
    let tag = aead
        .encrypt_inout_detached(&[0u8; 12].into(), b"", buf.as_mut_slice().into())
        .expect("16 bytes always seal");
    buf.extend_from_slice(&tag);
    buf
}

fn open_body(key: &[u8; 32], body: &[u8]) -> Option<FileKey> {
    if body.len() != 32 {
        return None;
    }
    let aead = ChaCha20Poly1305::new(&(*key).into());
    let mut buf: [u8; 16] = body[..16].try_into().ok()?;
    let tag: [u8; 16] = body[16..].try_into().ok()?;
    aead.decrypt_inout_detached(
        &[0u8; 12].into(),
        b"",
        buf.as_mut_slice().into(),
        &tag.into(),
    )
    .ok()?;
    Some(buf)
}

fn x25519_wrap_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> [u8; 32] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(X25519_INFO, &mut key)
        .expect("32 bytes is a valid HKDF length");
    key
}

fn wrap_x25519(recipient: &Recipient, file_key: &FileKey, ephemeral_secret: [u8; 32]) -> Stanza {
    let ephemeral = x25519_dalek::x25519(ephemeral_secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    let shared = x25519_dalek::x25519(ephemeral_secret, recipient.0);
    let key = x25519_wrap_key(&shared, &ephemeral, &recipient.0);
    Stanza {
        kind: "X25519".into(),
        args: vec![B64.encode(ephemeral)],
        body: seal_body(&key, file_key),
    }
}

/// `Ok(None)` when the stanza is for another identity.
fn unwrap_x25519(stanza: &Stanza, id: &Identity) -> Result<Option<FileKey>, HeaderError> {
    let [ephemeral] = &stanza.args[..] else {
        return Err(HeaderError::Malformed("X25519 stanza arguments"));
    };
    let ephemeral = decode_exact::<32>(ephemeral)?;
    if stanza.body.len() != 32 {
        return Err(HeaderError::Malformed("X25519 stanza body"));
    }
    let shared = x25519_dalek::x25519(id.secret_bytes(), ephemeral);
    if shared == [0u8; 32] {
        return Err(HeaderError::Malformed("X25519 share is a low-order point"));
    }
    let key = x25519_wrap_key(&shared, &ephemeral, &id.to_recipient().0);
    Ok(open_body(&key, &stanza.body))
}

fn scrypt_key(passphrase: &[u8], salt: &[u8; 16], log_n: u8) -> Result<[u8; 32], HeaderError> {
    let mut full_salt = SCRYPT_LABEL.to_vec();
    full_salt.extend_from_slice(salt);
    let params = scrypt::Params::new(log_n, 8, 1).map_err(|_| HeaderError::Malformed("scrypt"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(passphrase, &full_salt, &params, &mut key)
        .map_err(|_| HeaderError::Malformed("scrypt"))?;
    Ok(key)
}

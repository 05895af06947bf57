//! age's X25519 keys in their text forms (`age1…` recipients, `AGE-SECRET-KEY-1…`
//! identities, both Bech32), identity files, and identity files protected by a passphrase
//! in age's encrypted form (what `age -p` writes), which the stock `age` reads too.

use std::fmt;
use std::str::FromStr;

use bech32::{Bech32, Hrp};

use super::header::{parse_header, write_scrypt_header, HeaderError};
use super::stream::decrypt_to_end;

const RECIPIENT_HRP: &str = "age";
const IDENTITY_HRP: &str = "age-secret-key-";
/// age's own default work factor for passphrases.
pub const SCRYPT_LOG_N: u8 = 18;

/// A public key: objects are encrypted to it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recipient(pub(super) [u8; 32]);

/// A private key: what decrypts. Its text never reaches a log: `Debug` hides it.
#[derive(Clone)]
pub struct Identity([u8; 32]);

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity(for {})", self.to_recipient())
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse(RECIPIENT_HRP).expect("valid hrp");
        f.write_str(&bech32::encode_lower::<Bech32>(hrp, &self.0).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for Recipient {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("{s:?} is not an age X25519 recipient ({why}); it looks like age1… (62 characters), as printed by `lomob key generate` or `age-keygen`")
        };
        if s.starts_with("AGE-SECRET-KEY-") {
            return Err("this is a secret identity (AGE-SECRET-KEY-…), not a recipient: put the age1… public key here and keep the identity in its own file".into());
        }
        if s != s.to_lowercase() {
            return Err(bad("recipients are lower case"));
        }
        let (hrp, data) = bech32::decode(s).map_err(|_| bad("bad Bech32"))?;
        if hrp.as_str() != RECIPIENT_HRP {
            return Err(bad("wrong prefix"));
        }
        let key: [u8; 32] = data.try_into().map_err(|_| bad("wrong length"))?;
        Ok(Recipient(key))
    }
}

impl Identity {
    pub(super) fn secret_bytes(&self) -> [u8; 32] {
        self.0
    }

    pub fn to_recipient(&self) -> Recipient {
        Recipient(x25519_dalek::x25519(
            self.0,
            x25519_dalek::X25519_BASEPOINT_BYTES,
        ))
    }

    /// The `AGE-SECRET-KEY-1…` text: only for writing an identity file or a paper copy.
    pub fn expose_secret(&self) -> String {
        let hrp = Hrp::parse(IDENTITY_HRP).expect("valid hrp");
        bech32::encode_upper::<Bech32>(hrp, &self.0).expect("32 bytes encode")
    }

    fn parse(s: &str) -> Option<Identity> {
        if s != s.to_uppercase() {
            return None;
        }
        let (hrp, data) = bech32::decode(s).ok()?;
        (hrp.as_str().eq_ignore_ascii_case(IDENTITY_HRP))
            .then(|| data.try_into().ok().map(Identity))
            .flatten()
    }
}

/// A new random identity.
pub fn generate_identity() -> Identity {
    Identity(rand::random())
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    #[error("line {0} is not an age identity (AGE-SECRET-KEY-1…), a comment or blank")]
    BadLine(usize),
    #[error("it holds no identity")]
    Empty,
    #[error("it is protected by a passphrase and none was given: set the passphrase's environment variable or file in the profile, or run in a terminal to be asked")]
    NeedsPassphrase,
    #[error("it could not be opened: {0}")]
    Encrypted(#[from] HeaderError),
    #[error("it could not be opened: {0}")]
    Payload(String),
    #[error("it is not text")]
    NotText,
}

/// The identities in an identity file: age's plain form (one `AGE-SECRET-KEY-1…` per line,
/// `#` comments) or that text encrypted with a passphrase. `passphrase` is asked only for
/// an encrypted file.
pub fn parse_identity_file(
    bytes: &[u8],
    passphrase: &mut dyn FnMut() -> Option<Vec<u8>>,
) -> Result<Vec<Identity>, IdentityFileError> {
    if super::is_age(bytes) {
        let (header, body) = parse_header(bytes)?;
        let pass = passphrase().ok_or(IdentityFileError::NeedsPassphrase)?;
        let key = header.unwrap_passphrase(&pass)?;
        let plain =
            decrypt_to_end(&key, body).map_err(|e| IdentityFileError::Payload(e.to_string()))?;
        return parse_identity_file(&plain, &mut || None);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| IdentityFileError::NotText)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(Identity::parse(line).ok_or(IdentityFileError::BadLine(i + 1))?);
    }
    if out.is_empty() {
        return Err(IdentityFileError::Empty);
    }
    Ok(out)
}

/// `text` encrypted with `passphrase`, as `age -p` would: readable by `age -d` and by
/// [`parse_identity_file`].
pub fn passphrase_protect(text: &[u8], passphrase: &[u8], log_n: u8) -> Vec<u8> {
    let file_key: super::FileKey = rand::random();
    let nonce: [u8; 16] = rand::random();
    let head = write_scrypt_header(passphrase, log_n, &file_key, &nonce);
    let source = super::EncryptingSource::new(
        std::sync::Arc::new(crate::archive::MemorySource(text.to_vec())),
        head,
        super::PayloadKey::derive(&file_key, &nonce),
    );
    source
        .to_vec()
        .expect("encrypting bytes in memory cannot fail")
}

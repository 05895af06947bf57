//! `[sites.NAME.encryption]`: the age recipients every object of the site is encrypted to,
//! and the identity that decrypts them.
//!
//! ```toml
//! [sites.parents.encryption]
//! recipients = ["age1…primary", "age1…recovery"]
//! identity = { file = "~/.config/lomob/identity.txt", passphrase = { env = "LOMOB_KEY_PASSPHRASE" } }
//! ```
//! Backing up needs only the recipients (public keys); restoring, `check --deep` and
//! `key verify` need the identity. A passphrase protects the identity file (age's
//! encrypted-identity form), never the objects: age's scrypt stanza cannot share a header
//! with the recovery key.

use std::path::PathBuf;

use lomob_backends::Secret;
use serde::{Deserialize, Serialize};

use crate::crypt::Recipient;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age X25519 public keys (`age1…`): the primary key and a recovery key at least.
    pub recipients: Vec<String>,
    /// Where the private key is, for reading objects back.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IdentityConfig {
    /// An age identity file (`AGE-SECRET-KEY-1…` lines), plain or passphrase-protected.
    pub file: PathBuf,
    /// The passphrase of a protected identity file; without it lomob asks in a terminal.
    #[serde(default)]
    pub passphrase: Option<Secret>,
}

impl EncryptionConfig {
    /// The recipients, parsed; the error names the bad one and what is expected.
    pub fn parsed_recipients(&self) -> Result<Vec<Recipient>, String> {
        if self.recipients.is_empty() {
            return Err("encryption.recipients is empty: give at least one age1… public key (`lomob key generate` makes one), and better two: your key and a recovery key kept on paper".into());
        }
        let mut out = Vec::with_capacity(self.recipients.len());
        for (i, r) in self.recipients.iter().enumerate() {
            let r = r
                .parse::<Recipient>()
                .map_err(|e| format!("encryption.recipients[{i}]: {e}"))?;
            if !out.contains(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

//! One encrypted site's key material, as the engine uses it:
//! - the recipients every object is encrypted to;
//! - the key that names staged objects (an HMAC of the content id, so a host cannot test
//!   whether you hold a photo it knows);
//! - the key that lets an interrupted image upload regenerate the same ciphertext;
//! - the identities that decrypt, read from the identity file only when something must be
//!   decrypted (backing up never needs them).
//!
//! The two HMAC keys derive from a random local secret (`keys/local.key` in lomob's data
//! folder, mode 0600) that never leaves the machine and never enters the manifest. Losing
//! it loses nothing: staged objects are recorded by name, and an upload that cannot be
//! continued byte-identical is abandoned and sent anew.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit as _, Mac};
use lomob_backends::source::ByteSource;
use sha2::Sha256;

use super::{write_header_seeded, EncryptingSource, FileKey, Identity, PayloadKey, Recipient};
use crate::config::{EncryptionConfig, IdentityConfig};

/// Why a site's keys could not be used. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("site {site}: {message}")]
    Config { site: String, message: String },
    #[error("site {site} is encrypted and reading it needs its identity: add `identity = {{ file = \"…\" }}` to [sites.{site}.encryption] (the file `lomob key generate` wrote, or your recovery key)")]
    NoIdentity { site: String },
    #[error("site {site}: identity file {path}: {message}")]
    Identity {
        site: String,
        path: PathBuf,
        message: String,
    },
    #[error("local key file {path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How an encrypted image was sealed: a random salt (with the local secret it gives the
/// file key and payload nonce again) and the header written then. Neither is secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSeal {
    pub salt: [u8; 16],
    pub head: Vec<u8>,
}

pub struct SiteCrypt {
    site: String,
    recipients: Vec<Recipient>,
    names: [u8; 32],
    resume: [u8; 32],
    identity: Option<IdentityConfig>,
    identities: OnceLock<Result<Vec<Identity>, String>>,
}

impl std::fmt::Debug for SiteCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteCrypt")
            .field("site", &self.site)
            .field("recipients", &self.recipients)
            .finish_non_exhaustive()
    }
}

impl SiteCrypt {
    /// The site's keys, with the local secret under `data_dir` (created on first use).
    pub fn open(site: &str, config: &EncryptionConfig, data_dir: &Path) -> Result<Self, KeyError> {
        let recipients = config
            .parsed_recipients()
            .map_err(|message| KeyError::Config {
                site: site.into(),
                message,
            })?;
        let local = local_secret(data_dir)?;
        let derive = |label: &str| {
            let mut k = [0u8; 32];
            Hkdf::<Sha256>::new(Some(site.as_bytes()), &local)
                .expand(label.as_bytes(), &mut k)
                .expect("32 bytes is a valid HKDF length");
            k
        };
        Ok(SiteCrypt {
            site: site.into(),
            recipients,
            names: derive("lomob stage names"),
            resume: derive("lomob image resume"),
            identity: config.identity.clone(),
            identities: OnceLock::new(),
        })
    }

    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    /// `stage/<32 hex digits>`: the same form as a plain site's, but keyed.
    pub fn stage_key(&self, content: &[u8; 16]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.names).expect("any key length");
        mac.update(content);
        let tag = mac.finalize().into_bytes();
        format!("{}{}", crate::keys::STAGE, hex::encode(&tag[..16]))
    }

    /// The name part of an image holding `contents`: 16 hex digits keyed like stage names,
    /// so the same group gets the same name on every attempt and the name says nothing of
    /// the files' dates.
    pub fn image_stem<'a>(&self, contents: impl Iterator<Item = &'a [u8; 16]>) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.names).expect("any key length");
        mac.update(b"image\0");
        for c in contents {
            mac.update(c);
        }
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// Everything that makes the ciphertext of `salt`'s object: file key, payload nonce,
    /// and the header (its ephemeral keys seeded too), all from the local secret.
    fn derived(&self, salt: &[u8; 16]) -> (Vec<u8>, PayloadKey) {
        let mut okm = [0u8; 64];
        Hkdf::<Sha256>::new(Some(salt), &self.resume)
            .expand(b"lomob derived seal", &mut okm)
            .expect("64 bytes is a valid HKDF length");
        let file_key: FileKey = okm[..16].try_into().expect("16 bytes");
        let nonce: [u8; 16] = okm[16..32].try_into().expect("16 bytes");
        let seed: [u8; 32] = okm[32..].try_into().expect("32 bytes");
        let head = write_header_seeded(&self.recipients, &file_key, &nonce, &seed);
        (head, PayloadKey::derive(&file_key, &nonce))
    }

    /// Seals a new image: a random salt, and the header it gives.
    pub fn new_image_seal(&self) -> ImageSeal {
        let salt: [u8; 16] = rand::random();
        let (head, _) = self.derived(&salt);
        ImageSeal { salt, head }
    }

    /// The image's bytes encrypted as `seal` says: byte-identical to every earlier attempt
    /// with the same seal. `None` when this machine cannot regenerate them (the local secret
    /// or the recipients changed since): the upload must then start anew under a new seal,
    /// never mix two ciphertexts.
    pub fn seal_image(
        &self,
        seal: &ImageSeal,
        image: Arc<dyn ByteSource>,
    ) -> Option<EncryptingSource> {
        let (head, key) = self.derived(&seal.salt);
        (head == seal.head).then(|| EncryptingSource::new(image, head, key))
    }

    /// True when this machine can regenerate the ciphertext `seal` began (see
    /// [`SiteCrypt::seal_image`]).
    pub fn owns_seal(&self, seal: &ImageSeal) -> bool {
        self.derived(&seal.salt).0 == seal.head
    }

    /// A small hot object (a catalog) sealed deterministically from its name and bytes:
    /// writing it again after a crash gives the same object, so it is recognised as already
    /// there rather than refused as a different one. Other bytes give another key stream.
    pub fn seal_index(&self, key: &str, bytes: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.resume).expect("any key length");
        mac.update(b"index\0");
        mac.update(key.as_bytes());
        mac.update(&Sha256::digest(bytes));
        let salt: [u8; 16] = mac.finalize().into_bytes()[..16]
            .try_into()
            .expect("16 bytes");
        let (head, pkey) = self.derived(&salt);
        EncryptingSource::new(
            Arc::new(crate::archive::MemorySource(bytes.to_vec())),
            head,
            pkey,
        )
        .to_vec()
        .expect("encrypting bytes in memory cannot fail")
    }

    /// A fresh encryption of `source` (staged objects, catalogs, snapshots): random keys.
    pub fn seal_fresh(&self, source: Arc<dyn ByteSource>) -> EncryptingSource {
        super::encrypt_source(&self.recipients, source)
    }

    /// The identities that decrypt this site's objects, read once.
    pub fn identities(&self) -> Result<&[Identity], KeyError> {
        let Some(id) = &self.identity else {
            return Err(KeyError::NoIdentity {
                site: self.site.clone(),
            });
        };
        match self.identities.get_or_init(|| load_identities(id)) {
            Ok(ids) => Ok(ids),
            Err(message) => Err(KeyError::Identity {
                site: self.site.clone(),
                path: id.file.clone(),
                message: message.clone(),
            }),
        }
    }
}

/// Reads an identity file, asking for its passphrase if it is protected.
pub fn load_identities(id: &IdentityConfig) -> Result<Vec<Identity>, String> {
    let path = lomob_backends::secret::expand_home(&id.file);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read it: {e}"))?;
    warn_if_shared(&path);
    let mut ask = || -> Option<Vec<u8>> {
        match &id.passphrase {
            Some(s) => s.reveal().ok().map(String::into_bytes),
            None => prompt_passphrase(&format!("Passphrase for {}: ", path.display())),
        }
    };
    super::parse_identity_file(&bytes, &mut ask).map_err(|e| e.to_string())
}

/// Reads a passphrase from the terminal without echo; `None` without a terminal.
pub fn prompt_passphrase(prompt: &str) -> Option<Vec<u8>> {
    crate::platform::term::read_hidden_line(prompt)
}

/// Warns when a key file can be read by other users.
pub fn warn_if_shared(path: &Path) {
    if let Some(mode) = crate::platform::file::readable_by_others(path) {
        tracing::warn!(
            "{} can be read by other users of this machine (mode {mode:o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
}

/// The machine's local secret, created (0600) on first use.
fn local_secret(data_dir: &Path) -> Result<[u8; 32], KeyError> {
    let path = data_dir.join("keys").join("local.key");
    let err = |source| KeyError::Local {
        path: path.clone(),
        source,
    };
    let parse = |text: &str| -> Option<[u8; 32]> { hex::decode(text.trim()).ok()?.try_into().ok() };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return parse(&text).ok_or_else(|| {
                err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not 64 hex digits: remove it and lomob makes a new one",
                ))
            })
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        Err(_) => {}
    }
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(err)?;
    let secret: [u8; 32] = rand::random();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        use crate::platform::file::PortableOpenOptions as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .owner_only()
            .open(&tmp)
            .map_err(err)?;
        f.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(err)?;
    }
    // Two processes racing: the first link wins and both use its secret.
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            local_secret(data_dir)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::MemorySource;

    fn config(r: &Recipient) -> EncryptionConfig {
        EncryptionConfig {
            recipients: vec![r.to_string()],
            identity: None,
        }
    }

    #[test]
    fn an_image_seal_regenerates_the_same_ciphertext_and_only_here() {
        let dir = tempfile::tempdir().unwrap();
        let id = super::super::generate_identity();
        let c = SiteCrypt::open("s", &config(&id.to_recipient()), dir.path()).unwrap();
        let again = SiteCrypt::open("s", &config(&id.to_recipient()), dir.path()).unwrap();
        let image: Arc<dyn ByteSource> = Arc::new(MemorySource(vec![5u8; 200_000]));
        let seal = c.new_image_seal();
        let a = c
            .seal_image(&seal, image.clone())
            .unwrap()
            .to_vec()
            .unwrap();
        let b = again
            .seal_image(&seal, image.clone())
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            super::super::decrypt_bytes(&[id], &a).unwrap(),
            vec![5u8; 200_000]
        );
        // Another machine (another local secret) cannot continue it.
        let other = tempfile::tempdir().unwrap();
        let elsewhere = SiteCrypt::open("s", &config(&c.recipients()[0]), other.path()).unwrap();
        assert!(elsewhere.seal_image(&seal, image).is_none());
        // Names are keyed: stable here, different elsewhere, same form as plain ones.
        let k = c.stage_key(&[1; 16]);
        assert!(crate::keys::is_stage_key(&k));
        assert_eq!(k, again.stage_key(&[1; 16]));
        assert_ne!(k, elsewhere.stage_key(&[1; 16]));
        assert_ne!(k, crate::keys::stage_key(&[1; 16]));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("keys/local.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

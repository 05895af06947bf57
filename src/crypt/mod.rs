//! Client-side encryption in the standard age format (age-encryption.org/v1), written and
//! read natively so that every object lomob encrypts can be decrypted by the stock `age`
//! command with the recovery identity alone, and so that lomob keeps control of what the
//! age tool's API hides:
//! - the file key and payload nonce of an image are known to lomob, so a resumed multipart
//!   upload regenerates byte-identical ciphertext for any range ([`EncryptingSource`]);
//! - a plaintext byte range maps onto whole 64 KiB ciphertext chunks ([`chunk_span`]), so
//!   one file is restored out of an encrypted image by a ranged read of its own chunks.
//!
//! Only X25519 recipients encrypt objects. A passphrase (age's scrypt stanza) protects
//! identity files, never objects, because a scrypt stanza cannot share a header with others.

mod header;
mod keys;
pub mod site;
mod stream;

pub use header::{parse_header, write_header, write_header_seeded, Header, HeaderError};
pub use keys::{
    generate_identity, parse_identity_file, passphrase_protect, Identity, IdentityFileError,
    Recipient, SCRYPT_LOG_N,
};
pub use site::{ImageSeal, KeyError, SiteCrypt};
pub use stream::{
    chunk_span, ciphertext_len, decrypt_chunks, decrypt_to_end, plaintext_len, DecryptError,
    EncryptingSource, PayloadKey, RangeDecryptor, StreamDecryptor, CHUNK,
};

/// The age file key: 16 random bytes, wrapped once per recipient in the header.
pub type FileKey = [u8; 16];

/// `source` encrypted to `recipients` under a fresh random file key and nonce.
pub fn encrypt_source(
    recipients: &[Recipient],
    source: std::sync::Arc<dyn lomob_backends::source::ByteSource>,
) -> EncryptingSource {
    let file_key: FileKey = rand::random();
    let nonce: [u8; 16] = rand::random();
    let head = write_header(recipients, &file_key, &nonce);
    EncryptingSource::new(source, head, PayloadKey::derive(&file_key, &nonce))
}

/// Encrypts `plain`, held in memory, to `recipients`.
pub fn encrypt_bytes(recipients: &[Recipient], plain: &[u8]) -> Vec<u8> {
    encrypt_source(
        recipients,
        std::sync::Arc::new(crate::archive::MemorySource(plain.to_vec())),
    )
    .to_vec()
    .expect("encrypting bytes in memory cannot fail")
}

/// Decrypts a whole age object held in memory with any of `identities`.
pub fn decrypt_bytes(identities: &[Identity], cipher: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let (header, body) = parse_header(cipher)?;
    let key = header.unwrap_with(identities)?;
    decrypt_to_end(&key, body)
}

/// True when `bytes` start like an age object (its version line).
pub fn is_age(bytes: &[u8]) -> bool {
    bytes.starts_with(header::VERSION_LINE.as_bytes())
}

#[cfg(test)]
mod tests;

//! The catalog: a JSON file written into every image as `/LOMOB/CATALOG.JSON`, so that an
//! image describes itself without lomob's database (recovery from nothing).
//!
//! It lists every packed file with its path, size, mtime, mode, SHA-256 and the byte offset of
//! its data inside the image (for ranged downloads of single files). It is generated from the
//! plan alone, so its bytes are a pure function of the inputs. It is placed after all file
//! data, which breaks the chicken-and-egg between its size and the offsets it records.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Format identifier stored in the catalog.
pub const CATALOG_FORMAT: &str = "lomob-iso-catalog";
/// Version of the catalog format; bump on incompatible changes.
pub const CATALOG_VERSION: u32 = 1;
/// Path of the catalog inside the image.
pub const CATALOG_PATH: &[u8] = b"LOMOB/CATALOG.JSON";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub format: String,
    pub version: u32,
    pub volume: CatalogVolume,
    pub files: Vec<CatalogFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogVolume {
    pub volume_id: String,
    /// Unix seconds.
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogFile {
    /// The path when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Base64 (standard alphabet) of the raw path bytes when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    pub size: u64,
    pub mtime: i64,
    pub mode: u32,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Byte offset of the file's data inside the image (contiguous even for multi-extent
    /// files). Empty files have no data; their offset is 0.
    pub offset: u64,
    /// Lowercase hex of lomob's content id (xxh3-128), when the image was made by a sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl CatalogFile {
    /// Raw path bytes, whichever field holds them.
    pub fn raw_path(&self) -> Option<Vec<u8>> {
        match (&self.path, &self.path_b64) {
            (Some(p), _) => Some(p.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
            _ => None,
        }
    }

    /// Stores a raw path in the right field.
    pub fn set_raw_path(&mut self, raw: &[u8]) {
        match std::str::from_utf8(raw) {
            Ok(s) => {
                self.path = Some(s.to_string());
                self.path_b64 = None;
            }
            Err(_) => {
                self.path = None;
                self.path_b64 = Some(base64::engine::general_purpose::STANDARD.encode(raw));
            }
        }
    }

    /// Expected SHA-256 as bytes.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        let v = hex::decode(&self.sha256).ok()?;
        v.try_into().ok()
    }
}

impl Catalog {
    /// Deterministic encoding (fields in declaration order, no whitespace variance).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings and integers cannot fail.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn from_json(bytes: &[u8]) -> Result<Catalog, super::IsoError> {
        let c: Catalog = serde_json::from_slice(bytes)
            .map_err(|e| super::IsoError::Catalog(format!("invalid catalog JSON: {e}")))?;
        if c.format != CATALOG_FORMAT {
            return Err(super::IsoError::Catalog(format!(
                "unknown catalog format {:?}",
                c.format
            )));
        }
        if c.version > CATALOG_VERSION {
            return Err(super::IsoError::Catalog(format!(
                "catalog version {} is newer than supported {}",
                c.version, CATALOG_VERSION
            )));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_path_roundtrip() {
        let mut f = CatalogFile {
            path: None,
            path_b64: None,
            size: 1,
            mtime: 2,
            mode: 0o644,
            sha256: "00".repeat(32),
            offset: 4096,
            content: None,
        };
        f.set_raw_path(b"a/\xff\xfe.jpg");
        assert!(f.path.is_none());
        assert_eq!(f.raw_path().unwrap(), b"a/\xff\xfe.jpg");
        let c = Catalog {
            format: CATALOG_FORMAT.into(),
            version: CATALOG_VERSION,
            volume: CatalogVolume {
                volume_id: "V".into(),
                created: 0,
            },
            files: vec![f],
        };
        assert_eq!(Catalog::from_json(&c.to_json()).unwrap(), c);
    }
}

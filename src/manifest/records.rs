//! The typed records stored in the manifest, and their compact binary encoding.
//!
//! Records are encoded with postcard (serde, varints, no field names): small on disk and
//! fast to decode, which matters when a rescan reads every record of a 200,000-file root.
//! Field order is part of the schema: append fields only together with a schema bump.

use serde::{Deserialize, Serialize};

/// Identity of a content: its 128-bit xxh3 hash, big-endian.
pub type ContentId = [u8; 16];

/// A library root: an absolute folder whose files are recorded relative to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRecord {
    pub id: u32,
    /// Absolute path as raw bytes (non-UTF-8 folders are preserved).
    pub path: Vec<u8>,
    /// Unix seconds when first scanned.
    pub added: i64,
}

/// One path in the library, with every content it has had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size, mtime (ns since the epoch), inode and device at the last scan that read it:
    /// when all are unchanged a rescan does not read the file again.
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub device: u64,
    /// POSIX mode bits (kept for the archive image).
    pub mode: u32,
    /// Unix seconds the path was first seen.
    pub first_seen: i64,
    /// Unix seconds the path was found missing; `None` while it exists.
    pub deleted_at: Option<i64>,
    /// Oldest first; the last one is the current content. Never empty.
    pub versions: Vec<Version>,
}

/// The leading fields of a [`FileRecord`]: all a rescan needs to decide that a file is
/// unchanged. Decoded alone (postcard fields are in order), it spares reading versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub device: u64,
    pub mode: u32,
    pub first_seen: i64,
    pub deleted_at: Option<i64>,
}

pub(crate) fn decode_stat(bytes: &[u8]) -> Result<FileStat, postcard::Error> {
    postcard::take_from_bytes(bytes).map(|(s, _)| s)
}

impl FileRecord {
    /// A present file with one version of `content` (tests' records).
    #[cfg(test)]
    pub(crate) fn one_version(content: ContentId, size: u64, mtime_ns: i64) -> FileRecord {
        FileRecord {
            size,
            mtime_ns,
            inode: 1,
            device: 1,
            mode: 0o644,
            first_seen: 1,
            deleted_at: None,
            versions: vec![Version {
                content,
                size,
                mtime_ns,
                recorded: 1,
            }],
        }
    }

    pub fn current(&self) -> &Version {
        self.versions
            .last()
            .expect("a file record always holds at least one version")
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// One content a path has had. Old versions are kept: they may already be archived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub content: ContentId,
    pub size: u64,
    pub mtime_ns: i64,
    /// Unix seconds this version was recorded.
    pub recorded: i64,
}

/// A distinct content, shared by every path that holds the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRecord {
    pub size: u64,
    pub sha256: [u8; 32],
    pub first_seen: i64,
}

/// What one command did, kept for `status` and for troubleshooting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// What ran: "scan", later "sync:SITE", "check:SITE".
    pub command: String,
    pub started: i64,
    pub ended: i64,
    /// Named counters (new, changed, deleted, bytes_hashed, errors, requests...).
    pub counts: Vec<(String, u64)>,
    /// Error messages, capped so one bad disk cannot bloat the manifest.
    pub errors: Vec<String>,
    pub ok: bool,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("postcard encoding of plain records cannot fail")
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Key of a file record: the root id (big-endian, so one root's files are contiguous) and
/// the path relative to the root, '/'-separated, as raw bytes.
pub fn file_key(root: u32, rel: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + rel.len());
    k.extend_from_slice(&root.to_be_bytes());
    k.extend_from_slice(rel);
    k
}

/// Splits a file key into its root id and relative path.
pub fn split_file_key(key: &[u8]) -> Option<(u32, &[u8])> {
    if key.len() < 4 {
        return None;
    }
    let (r, rel) = key.split_at(4);
    Some((u32::from_be_bytes(r.try_into().ok()?), rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_compactly() {
        let f = FileRecord {
            size: 2_000_000,
            mtime_ns: 1_700_000_000_123_456_789,
            inode: 1234,
            device: 2049,
            mode: 0o100644,
            first_seen: 1_700_000_000,
            deleted_at: None,
            versions: vec![Version {
                content: [7; 16],
                size: 2_000_000,
                mtime_ns: 1_700_000_000_123_456_789,
                recorded: 1_700_000_000,
            }],
        };
        let b = encode(&f);
        assert!(b.len() < 64, "record is {} bytes", b.len());
        assert_eq!(decode::<FileRecord>(&b).unwrap(), f);
    }

    #[test]
    fn the_stat_prefix_decodes_from_a_full_record() {
        let f = FileRecord {
            size: 5,
            mtime_ns: -3,
            inode: 9,
            device: 1,
            mode: 0o644,
            first_seen: 2,
            deleted_at: Some(7),
            versions: vec![],
        };
        let s = decode_stat(&encode(&f)).unwrap();
        assert_eq!(
            (s.size, s.mtime_ns, s.inode, s.deleted_at),
            (5, -3, 9, Some(7))
        );
    }

    #[test]
    fn staged_records_round_trip_in_every_form() {
        let content = [0xab; 16];
        let keys = [
            crate::keys::stage_key(&content),
            crate::keys::stage_key(&[1; 16]),
            format!("stage/{}", "AB".repeat(16)),
            "stage/abc".to_string(),
            "elsewhere/x".to_string(),
            String::new(),
        ];
        let etags = [
            None,
            Some(format!("\"{}\"", "0f".repeat(16))),
            Some(format!("\"{}\"", "0F".repeat(16))),
            Some(format!("\"{}-3\"", "0f".repeat(16))),
            Some("0f".repeat(16)),
            Some(crate::keys::stage_key(&content)),
        ];
        for key in &keys {
            for etag in &etags {
                let rec = StagedRecord {
                    key: key.clone(),
                    size: 123,
                    etag: etag.clone(),
                    at: 1_700_000_000,
                };
                let b = rec.encode_for(&content);
                assert_eq!(StagedRecord::decode_for(&content, &b).unwrap(), rec);
            }
        }
        let plain = StagedRecord {
            key: crate::keys::stage_key(&content),
            size: 5,
            etag: None,
            at: 1_700_000_000,
        };
        assert!(plain.encode_for(&content).len() <= 10);
    }

    #[test]
    fn file_keys_split_back() {
        let k = file_key(3, b"2024/01/a.jpg");
        assert_eq!(split_file_key(&k), Some((3, &b"2024/01/a.jpg"[..])));
        assert_eq!(split_file_key(b"ab"), None);
    }
}

/// Where an image is in its life. Uploads come with the sync; a created image is local.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IsoStatus {
    /// Written to a local file, not uploaded anywhere.
    Created,
    /// Uploaded to (and verified on) at least one site's archive.
    Uploaded,
}

/// One archive image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsoRecord {
    pub id: u32,
    /// File name, e.g. `2023-01-05--2023-03-30.iso`; unique in the manifest.
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub files: u64,
    /// Bytes of file data inside.
    pub data_bytes: u64,
    /// Unix seconds when the image was created (also its volume creation time).
    pub created: i64,
    pub status: IsoStatus,
    /// Where the image file was written, if it was written locally (raw path bytes).
    pub local_path: Option<Vec<u8>>,
    /// Per-site uploads: (site, region, bucket or root, key, unix seconds).
    pub uploads: Vec<IsoUpload>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsoUpload {
    pub site: String,
    pub region: String,
    pub bucket: String,
    pub key: String,
    pub at: i64,
}

/// Where one content sits inside one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    /// Byte offset of the content's first byte inside the image (for ranged restores).
    pub offset: u64,
    /// Its path inside the image.
    pub path: Vec<u8>,
}

/// Key of a placement: content id then image id, so "is this content packed?" is a prefix
/// lookup.
pub fn placement_key(content: &ContentId, iso: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(20);
    k.extend_from_slice(content);
    k.extend_from_slice(&iso.to_be_bytes());
    k
}

/// A content's copy on a site's stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedRecord {
    /// Object key on the stage.
    pub key: String,
    pub size: u64,
    /// The checksum the server computed of the stored bytes, as verified at staging: an
    /// ETag, or a provider checksum kept as `sha256:HEX` (Drive) or `quickxor:BASE64`
    /// (OneDrive), see `lomob_backends::object::provider_sum`.
    pub etag: Option<String>,
    /// Unix seconds it was verified there.
    pub at: i64,
}

/// A content safe in one of a site's archived images.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRecord {
    pub iso: u32,
    /// Unix seconds the image was verified on the archive.
    pub at: i64,
}

/// A record kept per site and content, stored knowing its content (so what the content
/// already says is not stored again).
pub(crate) trait SiteRecord: Sized {
    fn encode_for(&self, content: &ContentId) -> Vec<u8>;
    fn decode_for(content: &ContentId, bytes: &[u8]) -> Result<Self, postcard::Error>;
}

impl SiteRecord for ArchivedRecord {
    fn encode_for(&self, _: &ContentId) -> Vec<u8> {
        encode(self)
    }
    fn decode_for(_: &ContentId, bytes: &[u8]) -> Result<Self, postcard::Error> {
        decode(bytes)
    }
}

/// A staged record as schema 4 stores it: its object key and ETag in their usual forms
/// take 0 or 16 bytes instead of 38 and 34, a third of a fully staged manifest.
#[derive(Serialize, Deserialize)]
struct StoredStaged {
    key: StoredText,
    size: u64,
    etag: Option<StoredText>,
    at: i64,
}

/// A text stored by its form: exactly restored, whatever it is.
#[derive(Serialize, Deserialize)]
enum StoredText {
    /// The content's plain stage key (`stage/` and its id in hex).
    StageKeyOfContent,
    /// `stage/` and 32 lowercase hex digits (an encrypted site's keyed name).
    StageHex([u8; 16]),
    /// 32 lowercase hex digits in double quotes (an MD5 ETag).
    QuotedHex([u8; 16]),
    Other(String),
}

impl StoredText {
    fn of(text: &str, content: &ContentId) -> StoredText {
        let hex16 = |s: &str| -> Option<[u8; 16]> {
            let mut out = [0u8; 16];
            hex::decode_to_slice(s, &mut out).ok()?;
            (hex::encode(out) == s).then_some(out)
        };
        if let Some(h) = text.strip_prefix(crate::keys::STAGE).and_then(hex16) {
            return if h == *content {
                StoredText::StageKeyOfContent
            } else {
                StoredText::StageHex(h)
            };
        }
        let quoted = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
        match quoted.and_then(hex16) {
            Some(h) => StoredText::QuotedHex(h),
            None => StoredText::Other(text.to_string()),
        }
    }

    fn text(self, content: &ContentId) -> String {
        match self {
            StoredText::StageKeyOfContent => crate::keys::stage_key(content),
            StoredText::StageHex(h) => format!("{}{}", crate::keys::STAGE, hex::encode(h)),
            StoredText::QuotedHex(h) => format!("\"{}\"", hex::encode(h)),
            StoredText::Other(s) => s,
        }
    }
}

impl SiteRecord for StagedRecord {
    fn encode_for(&self, content: &ContentId) -> Vec<u8> {
        encode(&StoredStaged {
            key: StoredText::of(&self.key, content),
            size: self.size,
            etag: self.etag.as_deref().map(|e| StoredText::of(e, content)),
            at: self.at,
        })
    }
    fn decode_for(content: &ContentId, bytes: &[u8]) -> Result<Self, postcard::Error> {
        let s: StoredStaged = decode(bytes)?;
        Ok(StagedRecord {
            key: s.key.text(content),
            size: s.size,
            etag: s.etag.map(|e| e.text(content)),
            at: s.at,
        })
    }
}

/// Key of a per-site record: the site name, a NUL, then the content id.
pub fn site_key(site: &str, content: &ContentId) -> Vec<u8> {
    let mut k = Vec::with_capacity(site.len() + 17);
    k.extend_from_slice(site.as_bytes());
    k.push(0);
    k.extend_from_slice(content);
    k
}

/// A version whose bytes changed while the file kept its size, mtime and inode: bit rot, or
/// an editor that preserves dates. Recorded beside the new version (key: file key, then the
/// new content id) so it is reported as possible silent corruption; the older version's
/// copies stay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentChange {
    /// The content the scan had recorded before.
    pub previous: ContentId,
    /// Unix seconds the change was found.
    pub found: i64,
}

/// A version whose bytes changed before any copy of them was made: it can never be made
/// safe, so it is reported once and counted apart instead of waiting forever. Key: file
/// key, then its content id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostVersion {
    pub size: u64,
    /// Unix seconds the change was found.
    pub found: i64,
}

/// The devices a root and the mount points below it were on at the last scan. An unmounted
/// NAS leaves an empty folder on the parent file system: a changed device (with the files
/// gone) means "missing", never "deleted".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDevices {
    pub device: u64,
    /// Folders below the root on another device than their parent, relative to the root.
    pub mounts: Vec<MountPoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    pub rel: Vec<u8>,
    pub device: u64,
}

/// One file of a [`PendingImage`], with everything its image layout depends on, so the
/// image can be laid out again exactly (same bytes, same fingerprint) by a later run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMember {
    pub content: ContentId,
    pub image_path: Vec<u8>,
    pub size: u64,
    pub mtime: i64,
    pub mode: u32,
    pub sha256: [u8; 32],
}

/// What the archive held when a put was verified, before the image was recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    pub size: u64,
    pub sha256: [u8; 32],
    /// The object's ETag as the server reported it after verification (quotes removed).
    pub etag: Option<String>,
    pub at: i64,
}

/// An image a sync chose to upload and has not recorded yet. Written before the first byte
/// is sent, so a run killed at any point is continued or adopted by the next one: the same
/// image is laid out again from `members`, continued where its upload stopped, or, when
/// `stored` says the server already holds it verified, recorded without sending anything.
/// Key: site, NUL, name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingImage {
    pub site: String,
    pub name: String,
    pub key: String,
    /// Hex fingerprint of layout and catalog (the object's `fingerprint` metadata).
    pub fingerprint: String,
    pub volume_id: String,
    pub created: i64,
    pub members: Vec<PendingMember>,
    /// Unix seconds the upload was first started.
    pub started: i64,
    pub stored: Option<StoredImage>,
}

/// An object on a site's archive that lomob does not count as holding anything: one it
/// could not verify, or one found under a name it wanted. It is billed until deleted (and
/// deleting before the minimum storage duration is billed too), so it is kept on record and
/// shown by `status` and `cost`. Key: site, NUL, object key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnverifiedObject {
    pub key: String,
    pub size: u64,
    pub storage_class: Option<String>,
    /// Unix seconds, as the server reports it.
    pub modified: Option<i64>,
    /// Why it is not counted.
    pub reason: String,
    /// True when lomob wrote it (an upload it could not verify); false when it was found.
    pub ours: bool,
    /// Unix seconds it was recorded.
    pub found: i64,
}

/// Key of a per-site record named by a string: the site name, a NUL, then the name.
pub fn site_name_key(site: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(site.len() + name.len() + 1);
    k.extend_from_slice(site.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Key of a per-version record: the file key, then the content id.
pub fn version_key(root: u32, rel: &[u8], content: &ContentId) -> Vec<u8> {
    let mut k = file_key(root, rel);
    k.extend_from_slice(content);
    k
}

/// Splits a per-version key into root, relative path and content id.
pub fn split_version_key(key: &[u8]) -> Option<(u32, &[u8], ContentId)> {
    let (head, content) = key.split_at(key.len().checked_sub(16)?);
    let (root, rel) = split_file_key(head)?;
    Some((root, rel, content.try_into().ok()?))
}

/// A thaw lomob asked for on a cold archive object, kept until a restore has used it, so a
/// rerun (or a restore killed while waiting) never asks twice and can say when to come
/// back. Key: site, NUL, object key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThawRecord {
    pub key: String,
    /// `bulk`, `standard` or `expedited`.
    pub tier: String,
    /// Days the thawed copy stays readable.
    pub days: u32,
    /// Unix seconds the request was accepted.
    pub requested: i64,
    /// Unix seconds by which the provider says it is done (its stated upper bound).
    pub ready_by: i64,
}

/// What an archived image object looked like when it was verified: the baseline a check
/// compares HEAD and LIST answers with (no GET, no thaw). Key: site, NUL, image name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageObject {
    pub key: String,
    pub size: u64,
    /// The server's checksum of what it stored (quotes removed): an MD5 or multipart ETag.
    pub etag: Option<String>,
    /// The `fingerprint` metadata stored with the object.
    pub fingerprint: Option<String>,
    pub storage_class: Option<String>,
    /// The catalog beside it: its size and the hex MD5 and SHA-256 of its bytes.
    pub catalog_size: u64,
    pub catalog_md5: String,
    pub catalog_sha256: String,
    /// Unix seconds it was recorded; `baseline` when recorded by a check (an image
    /// archived before baselines were kept), not at upload.
    pub at: i64,
    pub baseline: bool,
}

/// The last run of one part of a check on one site (`stage`, `archive`, `local`), with
/// where a rotating read stopped. Key: site (empty for the local part), NUL, part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub part: String,
    pub ran: i64,
    /// Problems found; 0 with `checked` means clean.
    pub problems: u64,
    /// False when the part could not run to the end (a server failed, a budget ran out
    /// before anything was read).
    pub checked: bool,
    /// What it found, capped, one line each.
    pub summary: Vec<String>,
    /// Where a budgeted read (`--deep`, `--local`) goes on next time.
    pub cursor: Option<Vec<u8>>,
    /// Bytes read by the budgeted part of this run.
    pub read_bytes: u64,
}

/// The last alert sent for one source (`check-stage:SITE`, `sync:SITE`, `stale:SITE`...),
/// so an identical alert is not sent again before `repeat-after`, and one that clears sends
/// one "resolved". Key: the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    /// Hex fingerprint of the alert's subject and lines: equal means identical.
    pub fingerprint: String,
    pub subject: String,
    pub first_sent: i64,
    pub last_sent: i64,
    /// Something that happened (a silent change found by a sync), not a lasting state:
    /// it sends no "resolved".
    pub event: bool,
}

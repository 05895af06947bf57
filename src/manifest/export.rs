//! The portable manifest format: what `lomob manifest export` writes, what every site keeps
//! a copy of, and what recovery from nothing starts from.
//!
//! Format `lomob-manifest` version 2 is JSON Lines (UTF-8, one JSON object per line):
//! - line 1: `{"header":{"format":"lomob-manifest","version":2,"schema":2,"exported":UNIX,
//!   "manifest_id":"<32 hex>"}}`;
//! - then, in this order, any number of `{"root":{..}}`, `{"content":{..}}`, `{"file":{..}}`,
//!   `{"iso":{..}}`, `{"placement":{..}}`, `{"staged":{..}}`, `{"archived":{..}}`,
//!   `{"silent":{..}}`, `{"lost":{..}}`, `{"unverified":{..}}` and `{"run":{..}}` lines (field
//!   by field the records of [`super::records`]; hashes are lowercase hex; a path is a JSON
//!   string when it is valid UTF-8, else `{"b64":"..."}` holding its raw bytes in standard
//!   base64);
//! - last line: `{"end":{"records":N}}`, N counting the lines between header and end, so a
//!   truncated copy is detected.
//!
//! Version 1 files (no manifest id, no silent, lost or unverified lines) are still read.
//! Readers must reject a newer `version`. Importing an export and exporting again gives the
//! same lines except the header's `exported` time.
//!
//! An export may come from anywhere (a snapshot downloaded from a site someone else can
//! write to), and its keys and paths are later used to delete, download and write files.
//! So every field is checked before anything is written: object keys only in lomob's own
//! formats ([`crate::keys`]), paths relative (or, for roots, absolute) with no `..`, site
//! and image names in the forms lomob makes, hashes of the right length.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::records::{
    ArchivedRecord, ContentId, ContentRecord, FileRecord, IsoRecord, IsoStatus, IsoUpload,
    LostVersion, PlacementRecord, RootRecord, RunRecord, SilentChange, StagedRecord,
    UnverifiedObject, Version,
};
use super::{Manifest, ManifestBatch, ManifestError, Result, SCHEMA_VERSION};
use crate::keys;

pub const FORMAT: &str = "lomob-manifest";
pub const FORMAT_VERSION: u32 = 2;

/// A path as raw bytes, written as text when it is text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortablePath {
    Text(String),
    Bytes { b64: String },
}

impl PortablePath {
    pub fn from_bytes(b: &[u8]) -> Self {
        match std::str::from_utf8(b) {
            Ok(s) => PortablePath::Text(s.to_string()),
            Err(_) => PortablePath::Bytes {
                b64: base64::engine::general_purpose::STANDARD.encode(b),
            },
        }
    }

    pub fn to_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        match self {
            PortablePath::Text(s) => Ok(s.as_bytes().to_vec()),
            PortablePath::Bytes { b64 } => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("bad base64 path: {e}")),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Header {
        format: String,
        version: u32,
        schema: u32,
        exported: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest_id: Option<String>,
    },
    Root {
        id: u32,
        path: PortablePath,
        added: i64,
    },
    Content {
        id: String,
        size: u64,
        sha256: String,
        first_seen: i64,
    },
    File {
        root: u32,
        path: PortablePath,
        size: u64,
        mtime_ns: i64,
        inode: u64,
        device: u64,
        mode: u32,
        first_seen: i64,
        deleted_at: Option<i64>,
        versions: Vec<PortableVersion>,
    },
    Iso {
        id: u32,
        name: String,
        size: u64,
        sha256: String,
        files: u64,
        data_bytes: u64,
        created: i64,
        status: PortableIsoStatus,
        local_path: Option<PortablePath>,
        uploads: Vec<PortableUpload>,
    },
    Placement {
        content: String,
        iso: u32,
        offset: u64,
        path: PortablePath,
    },
    Staged {
        site: String,
        content: String,
        key: String,
        size: u64,
        etag: Option<String>,
        at: i64,
    },
    Archived {
        site: String,
        content: String,
        iso: u32,
        at: i64,
    },
    Silent {
        root: u32,
        path: PortablePath,
        content: String,
        previous: String,
        found: i64,
    },
    Lost {
        root: u32,
        path: PortablePath,
        content: String,
        size: u64,
        found: i64,
    },
    Unverified {
        site: String,
        key: String,
        size: u64,
        storage_class: Option<String>,
        modified: Option<i64>,
        reason: String,
        ours: bool,
        found: i64,
    },
    Run {
        id: u64,
        command: String,
        started: i64,
        ended: i64,
        counts: Vec<(String, u64)>,
        errors: Vec<String>,
        ok: bool,
    },
    End {
        records: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PortableIsoStatus {
    Created,
    Uploaded,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortableUpload {
    site: String,
    region: String,
    bucket: String,
    key: String,
    at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortableVersion {
    content: String,
    size: u64,
    mtime_ns: i64,
    recorded: i64,
}

/// Counts of what an export or import moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub roots: u64,
    pub contents: u64,
    pub files: u64,
    pub isos: u64,
    pub placements: u64,
    pub staged: u64,
    pub archived: u64,
    pub silent: u64,
    pub lost: u64,
    pub unverified: u64,
    pub runs: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.roots
            + self.contents
            + self.files
            + self.isos
            + self.placements
            + self.staged
            + self.archived
            + self.silent
            + self.lost
            + self.unverified
            + self.runs
    }

    /// Counts one line of the body (not the header or end).
    fn add(&mut self, line: &Line) {
        let c = match line {
            Line::Root { .. } => &mut self.roots,
            Line::Content { .. } => &mut self.contents,
            Line::File { .. } => &mut self.files,
            Line::Iso { .. } => &mut self.isos,
            Line::Placement { .. } => &mut self.placements,
            Line::Staged { .. } => &mut self.staged,
            Line::Archived { .. } => &mut self.archived,
            Line::Silent { .. } => &mut self.silent,
            Line::Lost { .. } => &mut self.lost,
            Line::Unverified { .. } => &mut self.unverified,
            Line::Run { .. } => &mut self.runs,
            Line::Header { .. } | Line::End { .. } => return,
        };
        *c += 1;
    }
}

// ---- export ------------------------------------------------------------------------------

fn root_line(r: RootRecord) -> Line {
    Line::Root {
        id: r.id,
        path: PortablePath::from_bytes(&r.path),
        added: r.added,
    }
}

fn file_line(root: u32, rel: &[u8], f: FileRecord) -> Line {
    Line::File {
        root,
        path: PortablePath::from_bytes(rel),
        size: f.size,
        mtime_ns: f.mtime_ns,
        inode: f.inode,
        device: f.device,
        mode: f.mode,
        first_seen: f.first_seen,
        deleted_at: f.deleted_at,
        versions: f
            .versions
            .iter()
            .map(|v| PortableVersion {
                content: hex::encode(v.content),
                size: v.size,
                mtime_ns: v.mtime_ns,
                recorded: v.recorded,
            })
            .collect(),
    }
}

fn iso_line(i: IsoRecord) -> Line {
    Line::Iso {
        id: i.id,
        name: i.name,
        size: i.size,
        sha256: hex::encode(i.sha256),
        files: i.files,
        data_bytes: i.data_bytes,
        created: i.created,
        status: match i.status {
            IsoStatus::Created => PortableIsoStatus::Created,
            IsoStatus::Uploaded => PortableIsoStatus::Uploaded,
        },
        local_path: i.local_path.as_deref().map(PortablePath::from_bytes),
        uploads: i
            .uploads
            .into_iter()
            .map(|u| PortableUpload {
                site: u.site,
                region: u.region,
                bucket: u.bucket,
                key: u.key,
                at: u.at,
            })
            .collect(),
    }
}

fn unverified_line(site: String, o: UnverifiedObject) -> Line {
    Line::Unverified {
        site,
        key: o.key,
        size: o.size,
        storage_class: o.storage_class,
        modified: o.modified,
        reason: o.reason,
        ours: o.ours,
        found: o.found,
    }
}

/// Every body line of the manifest, in the format's order.
/// Hands every record to `out` as a line, in the order of the format, reading each tree as
/// it goes: an export of a million files never holds more than a line (and the small trees).
fn body_lines(m: &Manifest, out: &mut dyn FnMut(Line) -> Result<()>) -> Result<()> {
    for r in m.roots()? {
        out(root_line(r))?;
    }
    for kv in m.contents() {
        let (id, r) = kv?;
        out(Line::Content {
            id: hex::encode(id),
            size: r.size,
            sha256: hex::encode(r.sha256),
            first_seen: r.first_seen,
        })?;
    }
    for kv in m.files() {
        let (root, rel, f) = kv?;
        out(file_line(root, &rel, f))?;
    }
    for i in m.isos()? {
        out(iso_line(i))?;
    }
    for kv in m.placements() {
        let (content, iso, p) = kv?;
        out(Line::Placement {
            content: hex::encode(content),
            iso,
            offset: p.offset,
            path: PortablePath::from_bytes(&p.path),
        })?;
    }
    for kv in m.staged_iter() {
        let (site, content, r) = kv?;
        out(Line::Staged {
            site,
            content: hex::encode(content),
            key: r.key,
            size: r.size,
            etag: r.etag,
            at: r.at,
        })?;
    }
    for kv in m.archived_iter() {
        let (site, content, r) = kv?;
        out(Line::Archived {
            site,
            content: hex::encode(content),
            iso: r.iso,
            at: r.at,
        })?;
    }
    for v in m.silent_changes()? {
        out(Line::Silent {
            root: v.root,
            path: PortablePath::from_bytes(&v.rel),
            content: hex::encode(v.content),
            previous: hex::encode(v.note.previous),
            found: v.note.found,
        })?;
    }
    for v in m.lost_versions()? {
        out(Line::Lost {
            root: v.root,
            path: PortablePath::from_bytes(&v.rel),
            content: hex::encode(v.content),
            size: v.note.size,
            found: v.note.found,
        })?;
    }
    for (site, o) in m.unverified(None)? {
        out(unverified_line(site, o))?;
    }
    // Oldest first in the file, so the order is stable.
    let mut runs: Vec<_> = m.runs().collect::<Result<_>>()?;
    runs.reverse();
    for (id, r) in runs {
        out(Line::Run {
            id,
            command: r.command,
            started: r.started,
            ended: r.ended,
            counts: r.counts,
            errors: r.errors,
            ok: r.ok,
        })?;
    }
    Ok(())
}

/// Writes the whole manifest to `out`.
pub fn write_to(m: &Manifest, out: &mut dyn Write, exported: i64) -> Result<Counts> {
    let io = |e: std::io::Error| ManifestError::Io {
        path: "<export>".into(),
        source: e,
    };
    let put = |line: &Line, out: &mut dyn Write| -> Result<()> {
        serde_json::to_writer(&mut *out, line).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)
    };
    put(
        &Line::Header {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            schema: SCHEMA_VERSION,
            exported,
            manifest_id: Some(m.id()?),
        },
        out,
    )?;
    let mut c = Counts::default();
    body_lines(m, &mut |line| {
        c.add(&line);
        put(&line, out)
    })?;
    put(&Line::End { records: c.total() }, out)?;
    Ok(c)
}

/// Writes the export to `path` atomically (a temporary file renamed into place).
pub fn export_file(m: &Manifest, path: &Path, exported: i64) -> Result<Counts> {
    export_file_hashed(m, path, exported).map(|(c, _)| c)
}

/// The size and SHA-256 of a file written by [`export_file_hashed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// As [`export_file`], hashing the bytes as they are written, so a snapshot is never read
/// back whole to be checked.
pub fn export_file_hashed(m: &Manifest, path: &Path, exported: i64) -> Result<(Counts, Written)> {
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("partial");
    let f = File::create(&tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(
        1 << 20,
        Hashing {
            inner: f,
            sha: sha2::Sha256::default(),
            bytes: 0,
        },
    );
    let c = write_to(m, &mut w, exported)?;
    let h = w.into_inner().map_err(|e| io(e.into_error()))?;
    h.inner.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    let written = Written {
        bytes: h.bytes,
        sha256: sha2::Digest::finalize(h.sha).into(),
    };
    Ok((c, written))
}

/// A writer (or reader) that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    sha: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.sha, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.sha, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

// ---- import ------------------------------------------------------------------------------

type Check<T> = std::result::Result<T, String>;

fn hex_array<const N: usize>(s: &str) -> Check<[u8; N]> {
    let v = hex::decode(s).map_err(|e| format!("bad hex {s:?}: {e}"))?;
    v.try_into()
        .map_err(|_| format!("{s:?} is not {} hex digits", N * 2))
}

fn content_id(s: &str) -> Check<ContentId> {
    hex_array(s)
}

fn site_name(s: &str) -> Check<()> {
    if keys::is_site_name(s) {
        Ok(())
    } else {
        Err(format!(
            "site name {s:?} is not a lomob site name (letters, digits, '-' and '_')"
        ))
    }
}

/// A file path inside a root, or a path inside an image.
fn relative(p: &PortablePath, what: &str) -> Check<Vec<u8>> {
    let b = p.to_bytes()?;
    if keys::is_relative_path(&b) {
        Ok(b)
    } else {
        Err(format!(
            "{what} {:?} is not a plain relative path (absolute, empty, '.' or '..' segments, or NUL)",
            String::from_utf8_lossy(&b)
        ))
    }
}

fn absolute(p: &PortablePath, what: &str) -> Check<Vec<u8>> {
    let b = p.to_bytes()?;
    if keys::is_absolute_path(&b) {
        Ok(b)
    } else {
        Err(format!(
            "{what} {:?} is not an absolute path without '.' or '..' segments",
            String::from_utf8_lossy(&b)
        ))
    }
}

fn no_control(s: &str, what: &str) -> Check<()> {
    if s.chars().any(char::is_control) {
        Err(format!("{what} {s:?} holds control characters"))
    } else {
        Ok(())
    }
}

/// What one body line adds to the manifest, checked.
enum Item {
    Root(RootRecord),
    Batch(Box<dyn FnOnce(&mut ManifestBatch)>),
    Iso(IsoRecord),
    Unverified(String, UnverifiedObject),
    Run(u64, RunRecord),
}

fn batch(f: impl FnOnce(&mut ManifestBatch) + 'static) -> Item {
    Item::Batch(Box::new(f))
}

fn check_upload(name: &str, u: PortableUpload) -> Check<IsoUpload> {
    site_name(&u.site)?;
    if u.key != keys::archive_key(name) {
        return Err(format!(
            "upload key {:?} of image {name:?} is not {:?}",
            u.key,
            keys::archive_key(name)
        ));
    }
    no_control(&u.bucket, "bucket")?;
    no_control(&u.region, "region")?;
    Ok(IsoUpload {
        site: u.site,
        region: u.region,
        bucket: u.bucket,
        key: u.key,
        at: u.at,
    })
}

/// Checks one body line and turns it into what it adds.
fn item(line: Line) -> Check<Item> {
    Ok(match line {
        Line::Header { .. } | Line::End { .. } => unreachable!("handled by the caller"),
        Line::Root { id, path, added } => Item::Root(RootRecord {
            id,
            path: absolute(&path, "root")?,
            added,
        }),
        Line::Content {
            id,
            size,
            sha256,
            first_seen,
        } => {
            let id = content_id(&id)?;
            let rec = ContentRecord {
                size,
                sha256: hex_array(&sha256)?,
                first_seen,
            };
            batch(move |b| b.put_content(&id, &rec))
        }
        line @ Line::File { .. } => file_item(line)?,
        line @ Line::Iso { .. } => Item::Iso(iso_item(line)?),
        Line::Placement {
            content,
            iso,
            offset,
            path,
        } => {
            let content = content_id(&content)?;
            let rec = PlacementRecord {
                offset,
                path: relative(&path, "path inside an image")?,
            };
            batch(move |b| b.put_placement(&content, iso, &rec))
        }
        line @ Line::Staged { .. } => staged_item(line)?,
        Line::Archived {
            site,
            content,
            iso,
            at,
        } => {
            site_name(&site)?;
            let content = content_id(&content)?;
            batch(move |b| b.put_archived(&site, &content, &ArchivedRecord { iso, at }))
        }
        Line::Silent {
            root,
            path,
            content,
            previous,
            found,
        } => {
            let rel = relative(&path, "file path")?;
            let content = content_id(&content)?;
            let rec = SilentChange {
                previous: content_id(&previous)?,
                found,
            };
            batch(move |b| b.put_silent_change(root, &rel, &content, &rec))
        }
        Line::Lost {
            root,
            path,
            content,
            size,
            found,
        } => {
            let rel = relative(&path, "file path")?;
            let content = content_id(&content)?;
            batch(move |b| b.put_lost(root, &rel, &content, &LostVersion { size, found }))
        }
        line @ Line::Unverified { .. } => unverified_item(line)?,
        Line::Run {
            id,
            command,
            started,
            ended,
            counts,
            errors,
            ok,
        } => Item::Run(
            id,
            RunRecord {
                command,
                started,
                ended,
                counts,
                errors,
                ok,
            },
        ),
    })
}

fn file_item(line: Line) -> Check<Item> {
    let Line::File {
        root,
        path,
        size,
        mtime_ns,
        inode,
        device,
        mode,
        first_seen,
        deleted_at,
        versions,
    } = line
    else {
        unreachable!("called for file lines")
    };
    if versions.is_empty() {
        return Err("a file without versions".into());
    }
    let versions = versions
        .into_iter()
        .map(|v| {
            Ok(Version {
                content: content_id(&v.content)?,
                size: v.size,
                mtime_ns: v.mtime_ns,
                recorded: v.recorded,
            })
        })
        .collect::<Check<Vec<_>>>()?;
    let rel = relative(&path, "file path")?;
    let rec = FileRecord {
        size,
        mtime_ns,
        inode,
        device,
        mode,
        first_seen,
        deleted_at,
        versions,
    };
    Ok(batch(move |b| b.put_file(root, &rel, &rec)))
}

fn iso_item(line: Line) -> Check<IsoRecord> {
    let Line::Iso {
        id,
        name,
        size,
        sha256,
        files,
        data_bytes,
        created,
        status,
        local_path,
        uploads,
    } = line
    else {
        unreachable!("called for image lines")
    };
    if !keys::is_image_name(&name) {
        return Err(format!("image name {name:?} is not one lomob makes"));
    }
    Ok(IsoRecord {
        id,
        size,
        sha256: hex_array(&sha256)?,
        files,
        data_bytes,
        created,
        status: match status {
            PortableIsoStatus::Created => IsoStatus::Created,
            PortableIsoStatus::Uploaded => IsoStatus::Uploaded,
        },
        local_path: local_path
            .map(|p| absolute(&p, "image local path"))
            .transpose()?,
        uploads: uploads
            .into_iter()
            .map(|u| check_upload(&name, u))
            .collect::<Check<Vec<_>>>()?,
        name,
    })
}

fn staged_item(line: Line) -> Check<Item> {
    let Line::Staged {
        site,
        content,
        key,
        size,
        etag,
        at,
    } = line
    else {
        unreachable!("called for staged lines")
    };
    site_name(&site)?;
    let content = content_id(&content)?;
    // The stage key of the content, or (on an encrypted site) a keyed name of the same
    // form; a name that points at another content's object fails its SHA-256 on restore.
    if !keys::is_stage_key(&key) {
        return Err(format!(
            "staged key {key:?} is not a stage key (stage/ and 32 hex digits, such as {:?})",
            keys::stage_key(&content)
        ));
    }
    if let Some(e) = &etag {
        no_control(e, "etag")?;
    }
    let rec = StagedRecord {
        key,
        size,
        etag,
        at,
    };
    Ok(batch(move |b| b.put_staged(&site, &content, &rec)))
}

fn unverified_item(line: Line) -> Check<Item> {
    let Line::Unverified {
        site,
        key,
        size,
        storage_class,
        modified,
        reason,
        ours,
        found,
    } = line
    else {
        unreachable!("called for unverified lines")
    };
    site_name(&site)?;
    if !keys::is_confined(&key) || !(key.starts_with(keys::ARCHIVE) || key.starts_with(keys::STAGE))
    {
        return Err(format!(
            "unverified object key {key:?} is not under archive/ or stage/"
        ));
    }
    Ok(Item::Unverified(
        site,
        UnverifiedObject {
            key,
            size,
            storage_class,
            modified,
            reason,
            ours,
            found,
        },
    ))
}

/// The header's checks; returns the manifest id it carries.
fn header(format: &str, version: u32, id: Option<String>) -> Check<Option<String>> {
    if format != FORMAT {
        return Err(format!("format is {format:?}, expected {FORMAT:?}"));
    }
    if version > FORMAT_VERSION {
        return Err(format!(
            "format version {version} is newer than this lomob reads ({FORMAT_VERSION}): upgrade lomob"
        ));
    }
    if let Some(id) = &id {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("manifest id {id:?} is not 32 hex digits"));
        }
    }
    Ok(id)
}

/// What reading an export found besides its records: the manifest id in its header, the
/// records counted, and the SHA-256 of the bytes read.
struct Parsed {
    id: Option<String>,
    counts: Counts,
    sha256: [u8; 32],
}

/// Reads and checks the export at `path`, handing each record to `each` as it is read.
fn read_file(path: &Path, each: &mut dyn FnMut(Item) -> Result<()>) -> Result<Parsed> {
    use sha2::Digest as _;
    let f = File::open(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut input = BufReader::with_capacity(
        1 << 16,
        Hashing {
            inner: f,
            sha: sha2::Sha256::new(),
            bytes: 0,
        },
    );
    let (id, counts) = parse_lines(&mut input, path, each)?;
    // Whatever follows the end line was refused, so the hash covers the whole file read.
    let sha256 = input.into_inner().sha.finalize().into();
    Ok(Parsed { id, counts, sha256 })
}

/// Parses and checks an export held in memory, writing nothing: what [`import_file`] would
/// accept. For the fuzz target (`fuzz/fuzz_targets/snapshot.rs`) and tests.
pub fn check_bytes(bytes: &[u8]) -> Result<Counts> {
    parse_lines(bytes, Path::new("<bytes>"), &mut |_| Ok(())).map(|(_, c)| c)
}

/// Checks every line of an export and hands each record to `each` in file order; `path`
/// names the file in errors. Returns the header's manifest id and the records counted.
fn parse_lines(
    input: impl BufRead,
    path: &Path,
    each: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<(Option<String>, Counts)> {
    let bad = |line: usize, reason: String| ManifestError::BadExport {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut id = None;
    let mut counts = Counts::default();
    let mut seen_header = false;
    let mut end: Option<u64> = None;
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| bad(n, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        if end.is_some() {
            return Err(bad(n, "data after the end line".into()));
        }
        let parsed: Line = serde_json::from_str(&line).map_err(|e| bad(n, e.to_string()))?;
        match parsed {
            Line::Header {
                format,
                version,
                manifest_id,
                ..
            } => {
                if seen_header {
                    return Err(bad(n, "a second header".into()));
                }
                id = header(&format, version, manifest_id).map_err(|e| bad(n, e))?;
                seen_header = true;
            }
            _ if !seen_header => {
                return Err(bad(
                    n,
                    format!("not a {FORMAT} file: the first line must be the header"),
                ))
            }
            Line::End { records } => end = Some(records),
            line => {
                counts.add(&line);
                each(item(line).map_err(|e| bad(n, e))?)?;
            }
        }
    }
    let total = counts.total();
    match end {
        None => Err(bad(
            0,
            "no end line: the file is truncated (copy it again)".into(),
        )),
        Some(n) if n != total => Err(bad(
            0,
            format!("the end line counts {n} records but the file holds {total}"),
        )),
        _ => Ok((id, counts)),
    }
}

/// Records written per transaction by an import.
const IMPORT_BATCH: usize = 8192;

/// Reads an export into `m`, which must be empty (or hold an import that did not finish,
/// which is discarded first). The whole file is read and checked once before the first
/// write, so a bad file leaves the manifest untouched; then it is read again and written in
/// batches, so memory does not grow with the library. Until the last batch is written the
/// manifest is marked as an unfinished import, which no other command will use; a file that
/// changed between the two readings is refused and what was written discarded.
pub fn import_file(m: &Manifest, path: &Path) -> Result<Counts> {
    if !m.is_empty() {
        if !m.import_unfinished()? {
            return Err(ManifestError::NotEmpty(m.path().to_path_buf()));
        }
        m.discard_unfinished_import()?;
    }
    let checked = read_file(path, &mut |_| Ok(()))?;
    m.begin_import()?;
    let written = (|| {
        let mut b = ManifestBatch::default();
        let parsed = read_file(path, &mut |item| {
            match item {
                Item::Root(r) => m.raw_insert_root(&r)?,
                Item::Batch(f) => {
                    f(&mut b);
                    if b.len() >= IMPORT_BATCH {
                        m.apply(std::mem::take(&mut b))?;
                    }
                }
                Item::Iso(i) => m.raw_insert_iso(&i)?,
                Item::Unverified(site, o) => m.put_unverified(&site, &o)?,
                Item::Run(id, r) => m.raw_insert_run(id, &r)?,
            }
            Ok(())
        })?;
        if parsed.sha256 != checked.sha256 {
            return Err(ManifestError::BadExport {
                path: path.to_path_buf(),
                line: 0,
                reason: "the file changed while it was imported; nothing was kept, import it again"
                    .into(),
            });
        }
        m.apply(b)?;
        if let Some(id) = &parsed.id {
            m.set_id(id)?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        m.discard_unfinished_import()?;
        return Err(e);
    }
    m.end_import()?;
    Ok(checked.counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small real export: one root, as `lomob manifest export` writes it.
    fn small_export() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::open(&dir.path().join("db")).unwrap();
        m.ensure_root(b"/photos", 1).unwrap();
        let mut out = Vec::new();
        write_to(&m, &mut out, 2).unwrap();
        out
    }

    #[test]
    fn check_bytes_accepts_an_export_and_refuses_it_cut_short() {
        let bytes = small_export();
        assert_eq!(check_bytes(&bytes).unwrap().roots, 1);
        let cut = &bytes[..bytes.len() - 5];
        assert!(check_bytes(cut).is_err());
        assert!(check_bytes(b"").is_err());
        assert!(check_bytes(b"\xff\xfe").is_err());
    }

    /// Case count, as for the ISO reader's: more through `ISO_FUZZ_CASES` (scripts/fuzz.sh
    /// on stable Rust).
    fn fuzz_cases() -> u32 {
        std::env::var("ISO_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

        /// The stable substitute of fuzz/fuzz_targets/snapshot.rs: a real export with bytes
        /// changed, cut or spliced is refused or accepted, never a panic.
        #[test]
        fn mutated_snapshots_never_panic(
            muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = small_export();
            for (i, b) in muts {
                let at = i.index(bytes.len());
                bytes[at] = b;
            }
            let end = cut.index(bytes.len() + 1);
            let _ = check_bytes(&bytes[..end]);
        }
    }
}

#[cfg(test)]
mod import_tests {
    use super::*;
    use crate::manifest::{ContentRecord, FileRecord, StagedRecord};

    /// A manifest with more records than one import batch holds.
    fn big_manifest(dir: &Path) -> Manifest {
        let m = Manifest::open(dir).unwrap();
        m.ensure_root(b"/photos", 1).unwrap();
        let mut b = ManifestBatch::default();
        for i in 0..(IMPORT_BATCH as u32 / 2 + 300) {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id[15] = 1;
            b.put_content(
                &id,
                &ContentRecord {
                    size: 10,
                    sha256: [i as u8; 32],
                    first_seen: 1,
                },
            );
            b.put_file(
                1,
                format!("d{}/f{i}.jpg", i % 7).as_bytes(),
                &FileRecord::one_version(id, 10, 5),
            );
            if i % 3 == 0 {
                b.put_staged(
                    "local",
                    &id,
                    &StagedRecord {
                        key: format!("stage/{}", hex::encode(id)),
                        size: 10,
                        etag: None,
                        at: 2,
                    },
                );
            }
        }
        m.apply(b).unwrap();
        m
    }

    fn export_bytes(m: &Manifest) -> Vec<u8> {
        let mut out = Vec::new();
        write_to(m, &mut out, 7).unwrap();
        out
    }

    #[test]
    fn an_import_in_batches_round_trips_and_keeps_the_totals() {
        let dir = tempfile::tempdir().unwrap();
        let m = big_manifest(&dir.path().join("a"));
        let file = dir.path().join("export.jsonl");
        std::fs::write(&file, export_bytes(&m)).unwrap();
        let n = Manifest::open(&dir.path().join("b")).unwrap();
        let counts = import_file(&n, &file).unwrap();
        assert_eq!(counts.files, IMPORT_BATCH as u64 / 2 + 300);
        assert_eq!(export_bytes(&n), export_bytes(&m));
        assert_eq!(n.totals().unwrap(), m.totals().unwrap());
        assert!(!n.import_unfinished().unwrap());
        n.ensure_complete().unwrap();
    }

    #[test]
    fn an_unfinished_import_is_refused_then_started_over() {
        let dir = tempfile::tempdir().unwrap();
        let m = big_manifest(&dir.path().join("a"));
        let file = dir.path().join("export.jsonl");
        std::fs::write(&file, export_bytes(&m)).unwrap();
        let db = dir.path().join("b");
        {
            // What a kill after the first batches leaves.
            let n = Manifest::open(&db).unwrap();
            n.begin_import().unwrap();
            n.ensure_root(b"/photos", 1).unwrap();
            let mut b = ManifestBatch::default();
            b.put_file(1, b"half.jpg", &FileRecord::one_version([9; 16], 1, 1));
            n.apply(b).unwrap();
            n.flush().unwrap();
        }
        let n = Manifest::open(&db).unwrap();
        let e = n.ensure_complete().unwrap_err().to_string();
        assert!(e.contains("did not finish") && e.contains("import"), "{e}");
        import_file(&n, &file).unwrap();
        n.ensure_complete().unwrap();
        assert!(n.file(1, b"half.jpg").unwrap().is_none());
        assert_eq!(export_bytes(&n), export_bytes(&m));
        assert_eq!(n.totals().unwrap(), m.totals().unwrap());
    }

    #[test]
    fn a_bad_export_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let m = big_manifest(&dir.path().join("a"));
        let mut bytes = export_bytes(&m);
        // A bad line near the end: found by the first reading, before any write.
        let at = bytes.len() - 200;
        bytes.splice(at..at, b"\n{\"not\": \"a record\"}\n".iter().copied());
        let file = dir.path().join("export.jsonl");
        std::fs::write(&file, bytes).unwrap();
        let n = Manifest::open(&dir.path().join("b")).unwrap();
        assert!(import_file(&n, &file).is_err());
        assert!(n.is_empty());
        assert!(!n.import_unfinished().unwrap());
    }
}

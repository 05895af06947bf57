//! The portable manifest format: what `lomob manifest export` writes, what every site keeps
//! a copy of, and what recovery from nothing starts from.
//!
//! Format `lomob-manifest` version 1 is JSON Lines (UTF-8, one JSON object per line):
//! - line 1: `{"header":{"format":"lomob-manifest","version":1,"schema":1,"exported":UNIX}}`
//! - then, in this order, any number of `{"root":{..}}`, `{"content":{..}}`, `{"file":{..}}`,
//!   `{"iso":{..}}`, `{"placement":{..}}`, `{"staged":{..}}`, `{"archived":{..}}` and
//!   `{"run":{..}}` lines (field by field the records of [`super::records`]; hashes are
//!   lowercase hex; a path is a JSON string when it is valid UTF-8, else `{"b64":"..."}`
//!   holding its raw bytes in standard base64);
//! - last line: `{"end":{"records":N}}`, N counting the lines between header and end, so a
//!   truncated copy is detected.
//!
//! Readers must reject a newer `version`. Importing an export and exporting again gives the
//! same lines except the header's `exported` time.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::records::{
    ArchivedRecord, ContentRecord, FileRecord, IsoRecord, IsoStatus, IsoUpload, PlacementRecord,
    RootRecord, RunRecord, StagedRecord, Version,
};
use super::{Manifest, ManifestBatch, ManifestError, Result, SCHEMA_VERSION};

pub const FORMAT: &str = "lomob-manifest";
pub const FORMAT_VERSION: u32 = 1;

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
            + self.runs
    }
}

/// Writes the whole manifest to `out`.
pub fn write_to(m: &Manifest, out: &mut dyn Write, exported: i64) -> Result<Counts> {
    let mut c = Counts::default();
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
        },
        out,
    )?;
    for r in m.roots()? {
        put(
            &Line::Root {
                id: r.id,
                path: PortablePath::from_bytes(&r.path),
                added: r.added,
            },
            out,
        )?;
        c.roots += 1;
    }
    for kv in m.contents() {
        let (id, r) = kv?;
        put(
            &Line::Content {
                id: hex::encode(id),
                size: r.size,
                sha256: hex::encode(r.sha256),
                first_seen: r.first_seen,
            },
            out,
        )?;
        c.contents += 1;
    }
    for kv in m.files() {
        let (root, rel, f) = kv?;
        put(
            &Line::File {
                root,
                path: PortablePath::from_bytes(&rel),
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
            },
            out,
        )?;
        c.files += 1;
    }
    for i in m.isos()? {
        put(
            &Line::Iso {
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
            },
            out,
        )?;
        c.isos += 1;
    }
    for kv in m.placements() {
        let (content, iso, p) = kv?;
        put(
            &Line::Placement {
                content: hex::encode(content),
                iso,
                offset: p.offset,
                path: PortablePath::from_bytes(&p.path),
            },
            out,
        )?;
        c.placements += 1;
    }
    for (site, content, r) in m.staged(None)? {
        put(
            &Line::Staged {
                site,
                content: hex::encode(content),
                key: r.key,
                size: r.size,
                etag: r.etag,
                at: r.at,
            },
            out,
        )?;
        c.staged += 1;
    }
    for (site, content, r) in m.archived(None)? {
        put(
            &Line::Archived {
                site,
                content: hex::encode(content),
                iso: r.iso,
                at: r.at,
            },
            out,
        )?;
        c.archived += 1;
    }
    // Oldest first in the file, so the order is stable.
    let mut runs: Vec<_> = m.runs().collect::<Result<_>>()?;
    runs.reverse();
    for (id, r) in runs {
        put(
            &Line::Run {
                id,
                command: r.command,
                started: r.started,
                ended: r.ended,
                counts: r.counts,
                errors: r.errors,
                ok: r.ok,
            },
            out,
        )?;
        c.runs += 1;
    }
    put(&Line::End { records: c.total() }, out)?;
    Ok(c)
}

/// Writes the export to `path` atomically (a temporary file renamed into place).
pub fn export_file(m: &Manifest, path: &Path, exported: i64) -> Result<Counts> {
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("partial");
    let f = File::create(&tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let c = write_to(m, &mut w, exported)?;
    let f = w.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(c)
}

fn hex_array<const N: usize>(s: &str) -> std::result::Result<[u8; N], String> {
    let v = hex::decode(s).map_err(|e| format!("bad hex {s:?}: {e}"))?;
    v.try_into()
        .map_err(|_| format!("{s:?} is not {} hex digits", N * 2))
}

/// Reads an export into `m`, which must be empty. Everything is parsed and checked before
/// the first write, so a bad file leaves the manifest untouched.
pub fn import_file(m: &Manifest, path: &Path) -> Result<Counts> {
    if !m.is_empty() {
        return Err(ManifestError::NotEmpty(m.path().to_path_buf()));
    }
    let f = File::open(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, reason: String| ManifestError::BadExport {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut roots = Vec::new();
    let mut batch = ManifestBatch::default();
    let mut runs = Vec::new();
    let mut isos = Vec::new();
    let mut c = Counts::default();
    let mut seen_header = false;
    let mut end: Option<u64> = None;
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| bad(n, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        if end.is_some() {
            return Err(bad(n, "data after the end line".into()));
        }
        let parsed: Line = serde_json::from_str(&line).map_err(|e| bad(n, e.to_string()))?;
        if !seen_header && !matches!(parsed, Line::Header { .. }) {
            return Err(bad(
                n,
                format!("not a {FORMAT} file: the first line must be the header"),
            ));
        }
        match parsed {
            Line::Header {
                format, version, ..
            } => {
                if seen_header {
                    return Err(bad(n, "a second header".into()));
                }
                if format != FORMAT {
                    return Err(bad(n, format!("format is {format:?}, expected {FORMAT:?}")));
                }
                if version > FORMAT_VERSION {
                    return Err(bad(
                        n,
                        format!("format version {version} is newer than this lomob reads ({FORMAT_VERSION}): upgrade lomob"),
                    ));
                }
                seen_header = true;
            }
            Line::Root { id, path, added } => {
                roots.push(RootRecord {
                    id,
                    path: path.to_bytes().map_err(|e| bad(n, e))?,
                    added,
                });
                c.roots += 1;
            }
            Line::Content {
                id,
                size,
                sha256,
                first_seen,
            } => {
                let id: [u8; 16] = hex_array(&id).map_err(|e| bad(n, e))?;
                let sha256 = hex_array(&sha256).map_err(|e| bad(n, e))?;
                batch.put_content(
                    &id,
                    &ContentRecord {
                        size,
                        sha256,
                        first_seen,
                    },
                );
                c.contents += 1;
            }
            Line::File {
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
            } => {
                if versions.is_empty() {
                    return Err(bad(n, "a file without versions".into()));
                }
                let versions = versions
                    .into_iter()
                    .map(|v| {
                        Ok(Version {
                            content: hex_array(&v.content)?,
                            size: v.size,
                            mtime_ns: v.mtime_ns,
                            recorded: v.recorded,
                        })
                    })
                    .collect::<std::result::Result<Vec<_>, String>>()
                    .map_err(|e| bad(n, e))?;
                let rel = path.to_bytes().map_err(|e| bad(n, e))?;
                batch.put_file(
                    root,
                    &rel,
                    &FileRecord {
                        size,
                        mtime_ns,
                        inode,
                        device,
                        mode,
                        first_seen,
                        deleted_at,
                        versions,
                    },
                );
                c.files += 1;
            }
            Line::Iso {
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
            } => {
                isos.push(IsoRecord {
                    id,
                    name,
                    size,
                    sha256: hex_array(&sha256).map_err(|e| bad(n, e))?,
                    files,
                    data_bytes,
                    created,
                    status: match status {
                        PortableIsoStatus::Created => IsoStatus::Created,
                        PortableIsoStatus::Uploaded => IsoStatus::Uploaded,
                    },
                    local_path: local_path
                        .map(|p| p.to_bytes())
                        .transpose()
                        .map_err(|e| bad(n, e))?,
                    uploads: uploads
                        .into_iter()
                        .map(|u| IsoUpload {
                            site: u.site,
                            region: u.region,
                            bucket: u.bucket,
                            key: u.key,
                            at: u.at,
                        })
                        .collect(),
                });
                c.isos += 1;
            }
            Line::Placement {
                content,
                iso,
                offset,
                path,
            } => {
                let content: [u8; 16] = hex_array(&content).map_err(|e| bad(n, e))?;
                batch.put_placement(
                    &content,
                    iso,
                    &PlacementRecord {
                        offset,
                        path: path.to_bytes().map_err(|e| bad(n, e))?,
                    },
                );
                c.placements += 1;
            }
            Line::Staged {
                site,
                content,
                key,
                size,
                etag,
                at,
            } => {
                let content: [u8; 16] = hex_array(&content).map_err(|e| bad(n, e))?;
                batch.put_staged(
                    &site,
                    &content,
                    &StagedRecord {
                        key,
                        size,
                        etag,
                        at,
                    },
                );
                c.staged += 1;
            }
            Line::Archived {
                site,
                content,
                iso,
                at,
            } => {
                let content: [u8; 16] = hex_array(&content).map_err(|e| bad(n, e))?;
                batch.put_archived(&site, &content, &ArchivedRecord { iso, at });
                c.archived += 1;
            }
            Line::Run {
                id,
                command,
                started,
                ended,
                counts,
                errors,
                ok,
            } => {
                runs.push((
                    id,
                    RunRecord {
                        command,
                        started,
                        ended,
                        counts,
                        errors,
                        ok,
                    },
                ));
                c.runs += 1;
            }
            Line::End { records } => end = Some(records),
        }
    }
    let total = c.total();
    match end {
        None => {
            return Err(bad(
                0,
                "no end line: the file is truncated (copy it again)".into(),
            ))
        }
        Some(n) if n != total => {
            return Err(bad(
                0,
                format!("the end line counts {n} records but the file holds {total}"),
            ))
        }
        _ => {}
    }
    for r in &roots {
        m.raw_insert_root(r)?;
    }
    m.apply(batch)?;
    for i in &isos {
        m.raw_insert_iso(i)?;
    }
    for (id, r) in &runs {
        m.raw_insert_run(*id, r)?;
    }
    m.flush()?;
    Ok(c)
}

//! Packing: choosing which recorded files go into which archive image, naming the images,
//! and producing them — to a local file here, straight into an upload later.
//!
//! Files are packed oldest first (by modification time), each distinct content once, into
//! images of at most the configured size; a single file larger than that gets an image of
//! its own. Inside an image a file lives at its absolute path without the leading `/`, so
//! images from several roots never collide and the path says where the file came from.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::iso::{IsoError, IsoFile, IsoPlan, VolumeInfo};
use crate::manifest::{
    ArchivedRecord, ContentId, IsoRecord, IsoStatus, IsoUpload, Manifest, ManifestBatch,
    ManifestError, PlacementRecord,
};
use crate::platform::names;
use crate::store::direct::{self, CopyFailure};

/// A content waiting to be packed, with the path it is read from.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub content: ContentId,
    /// Path inside the image (absolute path without the leading '/').
    pub image_path: Vec<u8>,
    pub source: PathBuf,
    pub size: u64,
    pub mtime: i64,
    pub mode: u32,
    pub sha256: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot lay out image {name}: {source}")]
    Plan { name: String, source: IsoError },
    #[error("image {name}: {path} is not in its layout, so its offset is unknown (a bug: please report it)")]
    NotInLayout { name: String, path: String },
    #[error("cannot write image {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Present files whose current content is not in any image yet, oldest first; each content
/// once (the first path in key order stands for the others).
pub fn candidates(m: &Manifest) -> Result<Vec<Candidate>, PackError> {
    let roots: std::collections::HashMap<u32, Vec<u8>> =
        m.roots()?.into_iter().map(|r| (r.id, r.path)).collect();
    let mut seen: HashSet<ContentId> = HashSet::new();
    let mut out = Vec::new();
    for kv in m.files() {
        let (root, rel, f) = kv?;
        if f.is_deleted() {
            continue;
        }
        let v = f.current();
        if !seen.insert(v.content) || m.is_packed(&v.content)? {
            continue;
        }
        let Some(content) = m.content(&v.content)? else {
            continue;
        };
        let Some(root_path) = roots.get(&root) else {
            continue;
        };
        let mut abs = root_path.clone();
        if !abs.ends_with(b"/") {
            abs.push(b'/');
        }
        abs.extend_from_slice(&rel);
        let image_path = names::relative_path(&abs);
        out.push(Candidate {
            content: v.content,
            image_path,
            source: names::path_of(&abs),
            size: v.size,
            mtime: v.mtime_ns.div_euclid(1_000_000_000),
            mode: f.mode & 0o7777,
            sha256: content.sha256,
        });
    }
    out.sort_by(|a, b| {
        a.mtime
            .cmp(&b.mtime)
            .then_with(|| a.image_path.cmp(&b.image_path))
    });
    Ok(out)
}

/// A generous estimate of what one file adds to an image besides its data: directory
/// records in both trees, Rock Ridge entries and its catalog line.
const PER_FILE_OVERHEAD: u64 = 2048;
const BASE_OVERHEAD: u64 = 1 << 20;

fn round_sector(n: u64) -> u64 {
    n.div_ceil(2048) * 2048
}

/// Takes the next group from `rest` whose image fits in `max` bytes (or one file alone),
/// and returns it with its plan.
pub fn next_image(
    rest: &mut VecDeque<Candidate>,
    max: u64,
    volume_for: &dyn Fn(&[Candidate]) -> VolumeInfo,
) -> Result<Option<(Vec<Candidate>, IsoPlan)>, PackError> {
    let mut group = Vec::new();
    let mut estimate = BASE_OVERHEAD;
    while let Some(c) = rest.front() {
        let add = round_sector(c.size) + PER_FILE_OVERHEAD;
        if !group.is_empty() && estimate + add > max {
            break;
        }
        estimate += add;
        group.push(rest.pop_front().expect("front exists"));
    }
    if group.is_empty() {
        return Ok(None);
    }
    loop {
        let plan = plan(&group, volume_for(&group))?;
        if plan.image_size() <= max || group.len() == 1 {
            return Ok(Some((group, plan)));
        }
        // The estimate was optimistic: give files back until the image fits.
        let give_back = (group.len() / 100).max(1);
        for _ in 0..give_back {
            if group.len() > 1 {
                rest.push_front(group.pop().expect("non-empty"));
            }
        }
    }
}

pub fn plan(group: &[Candidate], vol: VolumeInfo) -> Result<IsoPlan, PackError> {
    let name = vol.volume_id.clone();
    let files = group
        .iter()
        .map(|c| IsoFile {
            path: c.image_path.clone(),
            source: c.source.clone(),
            size: c.size,
            mtime: c.mtime,
            mode: c.mode,
            sha256: c.sha256,
            content: Some(c.content),
        })
        .collect();
    IsoPlan::new(files, vol).map_err(|source| PackError::Plan { name, source })
}

fn day(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `<oldest file date>--<newest file date>.iso`, as the original tool named images.
pub fn default_name(group: &[Candidate]) -> String {
    let oldest = group.iter().map(|c| c.mtime).min().unwrap_or(0);
    let newest = group.iter().map(|c| c.mtime).max().unwrap_or(0);
    format!("{}--{}.iso", day(oldest), day(newest))
}

/// Makes `name` unique among `taken` by adding `-2`, `-3`... before `.iso`.
pub fn unique_name(name: &str, taken: &dyn Fn(&str) -> bool) -> String {
    if !taken(name) {
        return name.to_string();
    }
    let stem = name.strip_suffix(".iso").unwrap_or(name);
    (2..)
        .map(|i| format!("{stem}-{i}.iso"))
        .find(|n| !taken(n))
        .expect("an unused name exists")
}

/// Why writing an image stopped.
pub enum WriteOutcome {
    /// The image is complete: its size and SHA-256.
    Done { size: u64, sha256: [u8; 32] },
    /// A source file no longer matches the scan; the image was abandoned. The path is the
    /// file's path inside the image.
    SourceChanged { image_path: String, reason: String },
}

/// Streams the whole image once, in order, and returns its SHA-256 and size; `sink` sees
/// every block ([`direct::stream`]: the image is generated, the files checked against their
/// SHA-256, hashed and handed to `sink` on three threads).
pub fn stream_image(
    plan: &IsoPlan,
    sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<([u8; 32], u64)> {
    direct::stream(plan.reader_at(0), sink)
}

/// Streams the plan's image into `path` (through a `.partial` file renamed at the end),
/// hashing it on the way.
pub fn write_image_file(plan: &IsoPlan, path: &Path) -> Result<WriteOutcome, PackError> {
    let tmp = path.with_extension("iso.partial");
    let err = |source| PackError::Write {
        path: path.to_path_buf(),
        source,
    };
    let (sha256, size) = match direct::write_file(plan.reader_at(0), &tmp, |_| {}) {
        Ok(v) => v,
        Err(failed) => {
            let _ = std::fs::remove_file(&tmp);
            let e = match failed {
                CopyFailure::Read(e) => e,
                CopyFailure::Write(e) => e,
            };
            if let Some(IsoError::SourceChanged { path, reason, .. }) = IsoError::from_io(&e) {
                return Ok(WriteOutcome::SourceChanged {
                    image_path: path.clone(),
                    reason: reason.clone(),
                });
            }
            return Err(err(e));
        }
    };
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(WriteOutcome::Done { size, sha256 })
}

/// A finished image to record: written to a local file (`lomob iso create`), or uploaded
/// and verified on a site's archive (a sync).
pub struct ImageToRecord<'a> {
    pub name: &'a str,
    pub group: &'a [Candidate],
    pub plan: &'a IsoPlan,
    pub size: u64,
    pub sha256: [u8; 32],
    pub local_path: Option<&'a Path>,
    /// The site archive it is verified on; its files are then recorded as archived there.
    pub upload: Option<IsoUpload>,
}

/// Records a finished image, where each of its contents sits (the byte offset ranged
/// restores read from), and, for an upload, that its contents are archived on that site.
pub fn record_image(m: &Manifest, img: &ImageToRecord<'_>) -> Result<IsoRecord, PackError> {
    // Placements come in image order, not input order: match them by path. A file missing
    // from the layout would get no offset, and a restore would read the wrong bytes.
    let offsets: std::collections::HashMap<&[u8], u64> = img
        .plan
        .placements()
        .iter()
        .map(|p| (p.path.as_slice(), p.offset))
        .collect();
    let offset_of = |c: &Candidate| {
        offsets
            .get(c.image_path.as_slice())
            .copied()
            .ok_or_else(|| PackError::NotInLayout {
                name: img.name.to_string(),
                path: String::from_utf8_lossy(&c.image_path).into_owned(),
            })
    };
    let mut batch = ManifestBatch::default();
    let placements = img
        .group
        .iter()
        .map(|c| Ok((c, offset_of(c)?)))
        .collect::<Result<Vec<_>, PackError>>()?;
    let mut rec = IsoRecord {
        id: 0,
        name: img.name.to_string(),
        size: img.size,
        sha256: img.sha256,
        files: img.group.len() as u64,
        data_bytes: img.group.iter().map(|c| c.size).sum(),
        created: crate::manifest::now(),
        status: if img.upload.is_some() {
            IsoStatus::Uploaded
        } else {
            IsoStatus::Created
        },
        local_path: img.local_path.map(|p| names::path_bytes(p).into_owned()),
        uploads: img.upload.iter().cloned().collect(),
    };
    let id = m.put_iso(&mut rec)?;
    for (c, offset) in placements {
        batch.put_placement(
            &c.content,
            id,
            &PlacementRecord {
                offset,
                path: c.image_path.clone(),
            },
        );
        if let Some(u) = &img.upload {
            batch.put_archived(&u.site, &c.content, &ArchivedRecord { iso: id, at: u.at });
        }
    }
    m.apply(batch)?;
    m.flush()?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, content: u8) -> Candidate {
        Candidate {
            content: [content; 16],
            image_path: name.as_bytes().to_vec(),
            source: PathBuf::from(format!("/nonexistent/{name}")),
            size: 3,
            mtime: 1_600_000_000,
            mode: 0o644,
            sha256: [content; 32],
        }
    }

    /// A ranged restore reads a file at its recorded offset: a file missing from the
    /// layout must be an error, never offset 0.
    #[test]
    fn a_file_missing_from_the_layout_is_an_error_not_offset_zero() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::open(dir.path()).unwrap();
        let group = vec![candidate("a/one.jpg", 1)];
        let plan = plan(
            &group,
            VolumeInfo {
                volume_id: "t".into(),
                created: 0,
            },
        )
        .unwrap();
        let mut with_stranger = group.clone();
        with_stranger.push(candidate("a/two.jpg", 2));
        let img = |group: &[Candidate]| {
            record_image(
                &m,
                &ImageToRecord {
                    name: "t.iso",
                    group,
                    plan: &plan,
                    size: plan.image_size(),
                    sha256: [0; 32],
                    local_path: None,
                    upload: None,
                },
            )
        };
        match img(&with_stranger) {
            Err(PackError::NotInLayout { path, .. }) => assert_eq!(path, "a/two.jpg"),
            other => panic!("expected NotInLayout, got {other:?}"),
        }
        let rec = img(&group).unwrap();
        let placed = m.placements_of(&[1; 16]).unwrap();
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].0, rec.id);
        assert_eq!(placed[0].1.offset, plan.placements()[0].offset);
        assert_ne!(placed[0].1.offset, 0);
    }
}

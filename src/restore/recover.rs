//! `lomob recover`: a manifest for a machine that has nothing but the profile.
//!
//! The first choice is the newest usable manifest snapshot on a stage (each sync leaves
//! one): it knows every path, version and copy. When no stage holds one that checks out,
//! the archive describes itself: the hot catalog beside each image lists every file's
//! path, size, hashes, mtime and offset, and a listing of the stage says which contents
//! are staged. Nothing here thaws, and nothing cold is read: catalogs are hot, images are
//! only listed. Every name from a snapshot or catalog is checked before it is recorded.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::iso::Catalog;
use crate::keys::{self, ARCHIVE, META, STAGE};
use crate::manifest::{
    self, export, ArchivedRecord, ContentId, ContentRecord, FileRecord, IsoRecord, IsoStatus,
    IsoUpload, Manifest, ManifestBatch, ManifestError, PlacementRecord, StagedRecord, Version,
};
use crate::site::Site;
use crate::store::RequestCounts;

/// What recovery found and did.
#[derive(Debug, Default, Serialize)]
pub struct RecoverReport {
    /// `snapshot` or `catalogs`.
    pub source: String,
    /// The snapshot used (site and key), when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub roots: Vec<String>,
    /// Roots guessed from the paths (no `[library] roots` covered them).
    pub inferred_roots: bool,
    pub files: u64,
    pub versions: u64,
    pub contents: u64,
    pub images: u64,
    pub staged: u64,
    /// Snapshots tried and not used, with why.
    pub skipped_snapshots: Vec<String>,
    /// What could not be accounted for.
    pub unaccounted: Vec<String>,
    pub warnings: Vec<String>,
    pub requests: BTreeMap<String, RequestCounts>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the manifest at {0} already holds files: recover only builds a new one (move it away, or give another --db)")]
    NotEmpty(PathBuf),
    #[error("nothing to recover from: {0}")]
    Nothing(String),
}

/// Builds `m` (which must be empty) from `sites`. `roots` are the profile's library roots
/// (raw absolute paths), used to split catalog paths into root and relative path.
pub async fn recover(
    m: &Manifest,
    sites: &[Arc<Site>],
    roots: &[Vec<u8>],
) -> Result<RecoverReport, RecoverError> {
    // A recovery stopped while importing a snapshot starts over.
    if m.import_unfinished()? {
        m.discard_unfinished_import()?;
    }
    if !m.is_empty() {
        return Err(RecoverError::NotEmpty(m.path().to_path_buf()));
    }
    let mut report = RecoverReport::default();
    if !from_snapshot(m, sites, &mut report).await? {
        from_catalogs(m, sites, roots, &mut report).await?;
    }
    count(m, &mut report)?;
    for s in sites {
        report.requests.insert(s.name.clone(), s.requests());
    }
    Ok(report)
}

/// Tries the snapshots on every stage, newest first; true when one was imported.
async fn from_snapshot(
    m: &Manifest,
    sites: &[Arc<Site>],
    report: &mut RecoverReport,
) -> Result<bool, RecoverError> {
    let mut found: Vec<((u64, String), usize, String, u64)> = Vec::new();
    for (i, s) in sites.iter().enumerate() {
        match s.stage.list(META).await {
            Ok(list) => found.extend(
                list.into_iter()
                    .filter(|o| is_snapshot_key(&o.key))
                    .map(|o| (crate::sync::snapshot::order(&o.key), i, o.key, o.size)),
            ),
            Err(e) => report
                .warnings
                .push(format!("site {}: cannot list its stage: {e}", s.name)),
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    let tmp_dir = crate::config::data_dir().join("tmp");
    std::fs::create_dir_all(&tmp_dir).map_err(|e| local(&tmp_dir, e))?;
    for (_, i, key, _) in found {
        let site = &sites[i];
        let tmp = tmp_dir.join(format!("recover-{}.jsonl", std::process::id()));
        let got = site.stage.download(&key, &tmp).await;
        let result = match got {
            Ok(_) => export::import_file(m, &tmp).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let _ = std::fs::remove_file(&tmp);
        match result {
            Ok(_) => {
                report.source = "snapshot".into();
                report.snapshot = Some(format!("site {}: {key}", site.name));
                check_snapshot_names(m, report)?;
                return Ok(true);
            }
            Err(e) => {
                report
                    .skipped_snapshots
                    .push(format!("site {}: {key}: {e}", site.name));
                if !m.is_empty() {
                    // An import writes only after everything parsed, and empties the
                    // manifest again when it fails later; should that fail too, a half
                    // manifest must not pass for a recovery.
                    return Err(RecoverError::Nothing(format!(
                        "the snapshot {key} failed half-way ({e}); remove {} and run recover again",
                        m.path().display()
                    )));
                }
            }
        }
    }
    Ok(false)
}

fn local(path: &std::path::Path, e: std::io::Error) -> RecoverError {
    RecoverError::Manifest(ManifestError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// `meta/manifest-….jsonl`, as snapshots are named.
fn is_snapshot_key(key: &str) -> bool {
    key.strip_prefix(META)
        .and_then(|n| n.strip_prefix("manifest-"))
        .is_some_and(|n| n.ends_with(".jsonl") && !n.contains('/'))
}

/// Reports the names in an imported snapshot that a restore will refuse (the restore
/// checks every name again before it writes).
fn check_snapshot_names(m: &Manifest, report: &mut RecoverReport) -> Result<(), RecoverError> {
    let roots = m.roots()?;
    for r in &roots {
        if !keys::is_absolute_path(&r.path) {
            report.unaccounted.push(format!(
                "root {:?} is not an absolute path: its files will be refused by restore",
                String::from_utf8_lossy(&r.path)
            ));
        }
    }
    let mut bad = 0u64;
    for kv in m.files() {
        let (_, rel, _) = kv?;
        if !keys::is_relative_path(&rel) {
            bad += 1;
        }
    }
    if bad > 0 {
        report.unaccounted.push(format!(
            "{bad} file names in the snapshot could leave a folder (`..`, absolute, NUL): restore refuses them"
        ));
    }
    Ok(())
}

/// One file found in a catalog.
struct Found {
    abs: Vec<u8>,
    content: ContentId,
    size: u64,
    mtime_ns: i64,
    mode: u32,
    /// The image's creation time: when this version was archived.
    recorded: i64,
    /// An older version of its path (the image path had a `~<content>` suffix).
    older: bool,
}

/// What the catalogs of every site add up to.
#[derive(Default)]
struct Gathered {
    found: Vec<Found>,
    batch: ManifestBatch,
    contents: HashMap<ContentId, ContentRecord>,
    catalogs: u64,
    /// Entries whose content id was made from the SHA-256 (catalogs without ids).
    synthetic: u64,
}

async fn from_catalogs(
    m: &Manifest,
    sites: &[Arc<Site>],
    roots: &[Vec<u8>],
    report: &mut RecoverReport,
) -> Result<(), RecoverError> {
    report.source = "catalogs".into();
    let mut g = Gathered::default();
    for site in sites {
        site_catalogs(m, site, &mut g, report).await?;
        staged_objects(site, &g.contents, &mut g.batch, report).await;
    }
    if g.catalogs == 0 {
        return Err(RecoverError::Nothing(
            "no stage holds a usable manifest snapshot and no archive holds a catalog: check the profile's bucket, prefix and credentials (`lomob site test`)"
                .into(),
        ));
    }
    if g.synthetic > 0 {
        report.warnings.push(format!(
            "{} catalog entries predate content ids: their ids were made from the SHA-256, so a later scan reads those files again",
            g.synthetic
        ));
    }
    for (id, c) in &g.contents {
        g.batch.put_content(id, c);
    }
    let split = split_roots(&g.found, roots);
    record_files(m, &g.found, &split, &mut g.batch)?;
    m.apply(g.batch)?;
    // The recovered manifest continues the one that marked the site, so the next sync is
    // not refused as another machine's (a snapshot keeps its id the same way).
    for site in sites {
        if let Some(id) = crate::sync::mark::owner(site).await {
            m.set_id(&id)?;
            break;
        }
    }
    m.flush()?;
    report.inferred_roots = split.inferred;
    report.roots = split
        .roots
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    report.warnings.push(
        "catalogs list one path per content in each image: other paths holding the same bytes are not known (a manifest snapshot knows them)".into(),
    );
    Ok(())
}

/// Reads every catalog of `site`'s images (hot objects; the images are only listed) and
/// records the images, placements and archived contents they describe.
async fn site_catalogs(
    m: &Manifest,
    site: &Site,
    g: &mut Gathered,
    report: &mut RecoverReport,
) -> Result<(), RecoverError> {
    let objects = match site.archive.list(ARCHIVE).await {
        Ok(l) => l,
        Err(e) => {
            report
                .warnings
                .push(format!("site {}: cannot list its archive: {e}", site.name));
            return Ok(());
        }
    };
    let sizes: HashMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    for o in &objects {
        let Some(image_key) = o.key.strip_suffix(".catalog.json") else {
            continue;
        };
        if !keys::is_site_image_key(&site.name, &o.key) || image_key.ends_with(".partial") {
            continue;
        }
        let Some(&image_size) = sizes.get(image_key) else {
            report.unaccounted.push(format!(
                "site {}: catalog {} has no image beside it",
                site.name, o.key
            ));
            continue;
        };
        let catalog = match site.archive.read_index(&o.key).await {
            Ok(b) => Catalog::from_json(&b).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let catalog = match catalog {
            Ok(c) => c,
            Err(e) => {
                report
                    .unaccounted
                    .push(format!("site {}: catalog {}: {e}", site.name, o.key));
                continue;
            }
        };
        g.catalogs += 1;
        let id = record_image(m, site, image_key, image_size, &catalog)?;
        let created = catalog.volume.created;
        for cf in &catalog.files {
            match catalog_file(cf, created) {
                Ok((f, image_path, sha256, made_up)) => {
                    g.synthetic += made_up as u64;
                    g.contents.entry(f.content).or_insert(ContentRecord {
                        size: f.size,
                        sha256,
                        first_seen: f.recorded,
                    });
                    let placement = PlacementRecord {
                        offset: cf.offset,
                        path: image_path,
                    };
                    g.batch.put_placement(&f.content, id, &placement);
                    let archived = ArchivedRecord {
                        iso: id,
                        at: created,
                    };
                    g.batch.put_archived(&site.name, &f.content, &archived);
                    g.found.push(f);
                }
                Err(why) => report.unaccounted.push(format!(
                    "site {}: catalog {}: {why}: left out",
                    site.name, o.key
                )),
            }
        }
    }
    Ok(())
}

/// Records the image a catalog describes (once, even when two sites list it); its id.
fn record_image(
    m: &Manifest,
    site: &Site,
    image_key: &str,
    image_size: u64,
    catalog: &Catalog,
) -> Result<u32, RecoverError> {
    let name = image_key.strip_prefix(ARCHIVE).unwrap_or(image_key);
    if let Some(existing) = m.iso_by_name(name)? {
        return Ok(existing.id);
    }
    let mut iso = IsoRecord {
        id: 0,
        name: name.to_string(),
        size: image_size,
        // Unknown without reading the cold image; nothing compares it on restore.
        sha256: [0; 32],
        files: catalog.files.len() as u64,
        data_bytes: catalog.files.iter().map(|f| f.size).sum(),
        created: catalog.volume.created,
        status: IsoStatus::Uploaded,
        local_path: None,
        uploads: vec![IsoUpload {
            site: site.name.clone(),
            region: site.archive_region(),
            bucket: site.archive.info().location.clone(),
            key: image_key.to_string(),
            at: catalog.volume.created,
        }],
    };
    Ok(m.put_iso(&mut iso)?)
}

/// One file record per path: its versions oldest first (one per content), the one without
/// a `~<content>` suffix last, as the current one.
fn record_files(
    m: &Manifest,
    found: &[Found],
    split: &Split,
    batch: &mut ManifestBatch,
) -> Result<(), RecoverError> {
    let now = manifest::now();
    let mut root_ids: HashMap<&[u8], u32> = HashMap::new();
    for r in &split.roots {
        root_ids.insert(r, m.ensure_root(r, now)?.id);
    }
    let mut files: BTreeMap<(u32, Vec<u8>), Vec<&Found>> = BTreeMap::new();
    for (f, root) in found.iter().zip(&split.of) {
        let root = &split.roots[*root];
        let rest = &f.abs[root.len()..];
        let rel = rest.strip_prefix(b"/").unwrap_or(rest);
        files
            .entry((root_ids[root.as_slice()], rel.to_vec()))
            .or_default()
            .push(f);
    }
    for ((root, rel), mut versions) in files {
        versions.sort_by_key(|f| (!f.older, f.recorded, f.mtime_ns));
        let mut seen = std::collections::HashSet::new();
        versions.retain(|f| seen.insert(f.content));
        let last = versions.last().expect("grouped from at least one");
        let rec = FileRecord {
            size: last.size,
            mtime_ns: last.mtime_ns,
            inode: 0,
            device: 0,
            mode: last.mode,
            first_seen: versions[0].recorded,
            deleted_at: None,
            versions: versions
                .iter()
                .map(|f| Version {
                    content: f.content,
                    size: f.size,
                    mtime_ns: f.mtime_ns,
                    recorded: f.recorded,
                })
                .collect(),
        };
        batch.put_file(root, &rel, &rec);
    }
    Ok(())
}

/// A catalog entry as a found file, its path inside the image, its SHA-256 and whether its
/// content id had to be made up; `Err` names what is wrong with a hostile or broken entry.
fn catalog_file(
    cf: &crate::iso::CatalogFile,
    created: i64,
) -> Result<(Found, Vec<u8>, [u8; 32], bool), String> {
    let image_path = cf.raw_path().ok_or("a path that is not valid base64")?;
    let shown = String::from_utf8_lossy(&image_path).into_owned();
    if !keys::is_relative_path(&image_path) {
        return Err(format!(
            "{shown:?} is not a plain relative path (`..`, absolute, NUL or empty parts)"
        ));
    }
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(&cf.sha256, &mut sha256)
        .map_err(|_| format!("{shown:?} has a malformed SHA-256"))?;
    let (content, made_up) = match cf.content.as_deref().map(|c| {
        let mut id = [0u8; 16];
        hex::decode_to_slice(c, &mut id).map(|()| id)
    }) {
        Some(Ok(id)) => (id, false),
        Some(Err(_)) => return Err(format!("{shown:?} has a malformed content id")),
        None => {
            let mut id = [0u8; 16];
            id.copy_from_slice(&sha256[..16]);
            (id, true)
        }
    };
    // Older versions of a path share an image as `<path>~<first 8 hex of the content>`.
    let tag = format!("~{}", &hex::encode(content)[..8]);
    let (path, older) = match image_path.strip_suffix(tag.as_bytes()) {
        Some(p) if !made_up && !p.is_empty() => (p.to_vec(), true),
        _ => (image_path.clone(), false),
    };
    let mut abs = Vec::with_capacity(path.len() + 1);
    abs.push(b'/');
    abs.extend_from_slice(&path);
    Ok((
        Found {
            abs,
            content,
            size: cf.size,
            mtime_ns: cf.mtime.saturating_mul(1_000_000_000),
            mode: cf.mode,
            recorded: created,
            older,
        },
        image_path,
        sha256,
        made_up,
    ))
}

/// Records the staged contents a catalog names; counts the others.
async fn staged_objects(
    site: &Site,
    contents: &HashMap<ContentId, ContentRecord>,
    batch: &mut ManifestBatch,
    report: &mut RecoverReport,
) {
    let list = match site.stage.list(STAGE).await {
        Ok(l) => l,
        Err(e) => {
            report
                .warnings
                .push(format!("site {}: cannot list its stage: {e}", site.name));
            return;
        }
    };
    let (mut unknown, mut unknown_bytes) = (0u64, 0u64);
    // Objects are named by content, or on an encrypted site by a keyed hash of it that
    // this machine can compute (with another machine's local secret they stay unknown).
    let by_key: HashMap<String, ContentId> =
        contents.keys().map(|c| (site.stage_key(c), *c)).collect();
    for o in list {
        if !keys::is_stage_key(&o.key) {
            continue;
        }
        let Some(id) = by_key.get(&o.key).copied() else {
            unknown += 1;
            unknown_bytes += o.size;
            continue;
        };
        // An encrypted copy is larger than its content by its header and tags.
        let fits = |c: &ContentRecord| match &site.crypt {
            Some(_) => o.size >= c.size,
            None => o.size == c.size,
        };
        match contents.get(&id) {
            Some(c) if fits(c) => batch.put_staged(
                &site.name,
                &id,
                &StagedRecord {
                    key: o.key.clone(),
                    size: o.size,
                    etag: o.etag.clone(),
                    at: manifest::now(),
                },
            ),
            _ => {
                unknown += 1;
                unknown_bytes += o.size;
            }
        }
    }
    if unknown > 0 {
        report.unaccounted.push(format!(
            "site {}: {unknown} staged objects ({}) hold files no catalog names (backed up since the last image): their paths are only in a manifest snapshot",
            site.name,
            lomob_backends::ByteSize(unknown_bytes)
        ));
    }
}

struct Split {
    roots: Vec<Vec<u8>>,
    /// For each found file, the index of its root.
    of: Vec<usize>,
    inferred: bool,
}

/// Splits absolute paths into roots: the longest configured root holding each path; paths
/// under none share their common ancestor folder as an inferred root.
fn split_roots(found: &[Found], configured: &[Vec<u8>]) -> Split {
    let norm: Vec<Vec<u8>> = configured
        .iter()
        .map(|r| {
            let t = r.strip_suffix(b"/").unwrap_or(r);
            if t.is_empty() {
                b"/".to_vec()
            } else {
                t.to_vec()
            }
        })
        .collect();
    let under = |abs: &[u8], root: &[u8]| {
        abs.starts_with(root) && (root == b"/" || abs.get(root.len()) == Some(&b'/'))
    };
    let mut roots: Vec<Vec<u8>> = Vec::new();
    let mut of = Vec::with_capacity(found.len());
    let mut orphans: Vec<usize> = Vec::new();
    for (i, f) in found.iter().enumerate() {
        let best = norm
            .iter()
            .filter(|r| under(&f.abs, r))
            .max_by_key(|r| r.len());
        match best {
            Some(r) => {
                let idx = roots.iter().position(|x| x == r).unwrap_or_else(|| {
                    roots.push(r.clone());
                    roots.len() - 1
                });
                of.push(idx);
            }
            None => {
                of.push(usize::MAX);
                orphans.push(i);
            }
        }
    }
    let inferred = !orphans.is_empty();
    if inferred {
        // The deepest folder holding every orphan.
        let mut common: Vec<u8> = found[orphans[0]].abs.clone();
        for &i in &orphans[1..] {
            let a = &found[i].abs;
            let n = common.iter().zip(a).take_while(|(x, y)| x == y).count();
            common.truncate(n);
        }
        // Cut back to a folder boundary, never the file itself.
        while !common.is_empty()
            && !orphans
                .iter()
                .all(|&i| found[i].abs.get(common.len()) == Some(&b'/'))
        {
            common.pop();
        }
        if common.is_empty() {
            common = b"/".to_vec();
        }
        roots.push(common);
        let idx = roots.len() - 1;
        for i in orphans {
            of[i] = idx;
        }
    }
    Split {
        roots,
        of,
        inferred,
    }
}

fn count(m: &Manifest, report: &mut RecoverReport) -> Result<(), RecoverError> {
    for kv in m.files() {
        let (_, _, f) = kv?;
        report.files += 1;
        report.versions += f.versions.len() as u64;
    }
    report.contents = m.contents().count() as u64;
    report.images = m.isos()?.len() as u64;
    report.staged = m.staged(None)?.len() as u64;
    if report.roots.is_empty() {
        report.roots = m
            .roots()?
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.path).into_owned())
            .collect();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(abs: &str) -> Found {
        Found {
            abs: abs.as_bytes().to_vec(),
            content: [0; 16],
            size: 1,
            mtime_ns: 0,
            mode: 0o644,
            recorded: 0,
            older: false,
        }
    }

    #[test]
    fn configured_roots_win_and_the_rest_share_an_ancestor() {
        let f = [
            found("/home/a/Pictures/x.jpg"),
            found("/srv/photos/2020/y.jpg"),
            found("/srv/photos/2021/z.jpg"),
        ];
        let s = split_roots(&f, &[b"/home/a/Pictures/".to_vec()]);
        assert!(s.inferred);
        assert_eq!(s.roots[s.of[0]], b"/home/a/Pictures");
        assert_eq!(s.roots[s.of[1]], b"/srv/photos");
        assert_eq!(s.of[1], s.of[2]);
    }

    #[test]
    fn a_root_is_a_folder_boundary() {
        let f = [found("/srv/photos-old/a.jpg")];
        let s = split_roots(&f, &[b"/srv/photos".to_vec()]);
        assert!(s.inferred);
        assert_eq!(s.roots[s.of[0]], b"/srv/photos-old");
    }

    #[test]
    fn snapshot_names() {
        assert!(is_snapshot_key(
            "meta/manifest-000000000001-20240101T000000Z.jsonl"
        ));
        assert!(!is_snapshot_key("meta/site.json"));
        assert!(!is_snapshot_key("meta/x/manifest-1.jsonl"));
    }
}

//! The archive part of a check: one LIST of `archive/` and one HEAD per image, never a GET
//! of an image and never a RestoreObject. Each image must be there with its size, storage
//! class, ETag and fingerprint as recorded when it was verified; each catalog with its size
//! and MD5 (`--deep` also reads the catalogs, which are hot, and checks their SHA-256).
//! Objects under `archive/` that nothing accounts for are reported, never touched.
//! `--repair` queues the files of a damaged image for a new one; the object itself is kept
//! on record as unverified (it is billed), never overwritten or deleted.

use std::collections::{HashMap, HashSet};

use sha2::Digest;

use super::{CheckOptions, PartReport, Problem};
use crate::keys::{self, catalog_key, ARCHIVE};
use crate::manifest::{self, ImageObject, IsoRecord, Manifest, ManifestError, UnverifiedObject};
use crate::site::Site;
use crate::store::ObjectInfo;

pub async fn check(
    m: &Manifest,
    site: &Site,
    opts: CheckOptions,
) -> Result<PartReport, ManifestError> {
    let mut p = PartReport::new("archive");
    let listed: HashMap<String, ObjectInfo> = match site.archive.list(ARCHIVE).await {
        Ok(l) => l.into_iter().map(|o| (o.key.clone(), o)).collect(),
        Err(e) => {
            p.fail(e.kind(), e.to_string());
            return Ok(p);
        }
    };
    p.checked = true;
    let images: Vec<(IsoRecord, String)> = m
        .isos()?
        .into_iter()
        .filter_map(|i| {
            let key = i.uploads.iter().find(|u| u.site == site.name)?.key.clone();
            Some((i, key))
        })
        .collect();
    let mut accounted: HashSet<String> = HashSet::new();
    let mut damaged: Vec<(IsoRecord, String)> = Vec::new();
    for (iso, key) in &images {
        p.looked_at += 1;
        accounted.insert(key.clone());
        accounted.insert(catalog_key(key));
        let before = p.findings.len();
        match image(m, site, iso, key, &listed, opts, &mut p).await {
            Ok(()) => {}
            Err(Stop::Store(e)) => {
                p.fail(e.kind(), e.to_string());
                return Ok(p);
            }
            Err(Stop::Manifest(e)) => return Err(e),
        }
        let image_broken = p.findings[before..]
            .iter()
            .any(|f| !matches!(f.problem, Problem::CatalogMissing | Problem::CatalogWrong));
        if image_broken {
            damaged.push((iso.clone(), key.clone()));
        }
    }
    for pi in m.pending_images(&site.name)? {
        accounted.insert(pi.key.clone());
        accounted.insert(catalog_key(&pi.key));
    }
    for (_, u) in m.unverified(Some(&site.name))? {
        accounted.insert(catalog_key(&u.key));
        accounted.insert(u.key);
    }
    // The catalog of an image the manifest knows (one a repair took off this site, say)
    // is not garbage: it still describes that image.
    for iso in m.isos()? {
        accounted.insert(catalog_key(&keys::archive_key(&iso.name)));
    }
    let mut unknown: Vec<&ObjectInfo> = listed
        .values()
        .filter(|o| !accounted.contains(&o.key) && o.key != keys::SITE_MARK)
        .collect();
    unknown.sort_by(|a, b| a.key.cmp(&b.key));
    for o in unknown {
        let ours = keys::is_site_image_key(&site.name, &o.key);
        p.find(
            if ours { Problem::Garbage } else { Problem::Foreign },
            &o.key,
            if ours {
                "named like this site's images, but the manifest does not know it: billed; left alone (it may be another copy of this manifest's work)".into()
            } else {
                "not lomob's: left alone".into()
            },
            o.size,
        );
    }
    if opts.repair {
        for (iso, key) in damaged {
            requeue(m, site, &iso, &key, &listed, &mut p)?;
        }
    }
    if p.in_place > 0 {
        p.notes.push(format!(
            "--deep: the receiver re-read the images and catalogs ({}) on its own disk and compared each with the SHA-256 it took on receipt; nothing was downloaded",
            lomob_backends::ByteSize(p.in_place)
        ));
    }
    Ok(p)
}

/// Checks one image and its catalog against the recorded baseline (recording one from the
/// HEAD answer for an image archived before baselines were kept).
async fn image(
    m: &Manifest,
    site: &Site,
    iso: &IsoRecord,
    key: &str,
    listed: &HashMap<String, ObjectInfo>,
    opts: CheckOptions,
    p: &mut PartReport,
) -> Result<(), Stop> {
    let fix = format!("lomob check --site {} --archive --repair", site.name);
    let Some(o) = listed.get(key) else {
        p.find(
            Problem::Missing,
            key,
            format!("image {} is not on the archive", iso.name),
            iso.size,
        )
        .fix = Some(fix);
        return Ok(());
    };
    if o.size != iso.size {
        p.find(
            Problem::WrongSize,
            key,
            format!("{} bytes, {} recorded", o.size, iso.size),
            o.size,
        )
        .fix = Some(fix.clone());
        return Ok(());
    }
    let Some(head) = site.archive.stat(key).await? else {
        p.find(
            Problem::Missing,
            key,
            "listed, then gone at HEAD".into(),
            iso.size,
        )
        .fix = Some(fix);
        return Ok(());
    };
    let expected_class = site
        .archive_client()
        .map(|c| c.storage_class().as_str().to_string());
    let baseline = match m.image_object(&site.name, &iso.name)? {
        Some(b) => b,
        None => {
            let b = ImageObject {
                key: key.to_string(),
                size: head.info.size,
                etag: head.info.etag.clone(),
                fingerprint: head.fingerprint.clone(),
                storage_class: head.storage_class.clone().or(expected_class.clone()),
                catalog_size: listed.get(&catalog_key(key)).map_or(0, |c| c.size),
                catalog_md5: listed
                    .get(&catalog_key(key))
                    .and_then(|c| c.etag.clone())
                    .filter(|e| is_md5(e))
                    .unwrap_or_default(),
                catalog_sha256: String::new(),
                at: manifest::now(),
                baseline: true,
            };
            m.put_image_object(&site.name, &iso.name, &b)?;
            p.notes.push(format!(
                "image {}: archived before checks kept a record of its checksum; what the server holds now is recorded and later checks compare with it",
                iso.name
            ));
            b
        }
    };
    let class = head.storage_class.clone().or(expected_class.clone());
    let want_class = baseline.storage_class.clone().or(expected_class);
    if class.is_some() && want_class.is_some() && class != want_class {
        p.find(
            Problem::WrongStorageClass,
            key,
            format!(
                "storage class {}, {} expected",
                class.unwrap_or_default(),
                want_class.unwrap_or_default()
            ),
            o.size,
        )
        .fix = Some(fix.clone());
    }
    if let (Some(now), Some(then)) = (&head.info.etag, &baseline.etag) {
        if now != then {
            p.find(
                Problem::WrongChecksum,
                key,
                format!("the server's checksum is {now}, {then} was recorded when it was verified: other bytes"),
                o.size,
            )
            .fix = Some(fix.clone());
        }
    }
    if let (Some(now), Some(then)) = (&head.fingerprint, &baseline.fingerprint) {
        if now != then {
            p.find(
                Problem::WrongFingerprint,
                key,
                format!("fingerprint metadata {now}, {then} recorded"),
                o.size,
            )
            .fix = Some(fix.clone());
        }
    }
    // A lomob receiver re-reads the image on its own disk: no byte crosses the network.
    if opts.deep {
        if let Some(v) = site.archive.verify_in_place(key).await? {
            p.in_place += o.size;
            if !v.intact() {
                p.find(
                    Problem::WrongChecksum,
                    key,
                    format!(
                        "the receiver re-read it on its disk: SHA-256 {}, received as {}: its disk damaged it",
                        v.now, v.received
                    ),
                    o.size,
                )
                .fix = Some(fix.clone());
            }
        }
    }
    catalog(site, iso, key, listed, &baseline, opts, p).await
}

async fn catalog(
    site: &Site,
    iso: &IsoRecord,
    key: &str,
    listed: &HashMap<String, ObjectInfo>,
    baseline: &ImageObject,
    opts: CheckOptions,
    p: &mut PartReport,
) -> Result<(), Stop> {
    let ck = catalog_key(key);
    let Some(c) = listed.get(&ck) else {
        p.find(
            Problem::CatalogMissing,
            &ck,
            format!("the catalog of image {} is missing: recovery from catalogs would not know its files", iso.name),
            0,
        );
        return Ok(());
    };
    let etag_md5 = c.etag.clone().filter(|e| is_md5(e));
    let wrong = if baseline.catalog_size > 0 && c.size != baseline.catalog_size {
        Some(format!(
            "{} bytes, {} recorded",
            c.size, baseline.catalog_size
        ))
    } else if let (Some(now), false) = (&etag_md5, baseline.catalog_md5.is_empty()) {
        (now != &baseline.catalog_md5)
            .then(|| format!("MD5 {now}, {} recorded: other bytes", baseline.catalog_md5))
    } else {
        None
    };
    if let Some(message) = wrong {
        p.find(Problem::CatalogWrong, &ck, message, c.size);
        return Ok(());
    }
    if opts.deep {
        if let Some(v) = site.archive.verify_in_place(&ck).await? {
            p.in_place += c.size;
            if !v.intact() {
                p.find(
                    Problem::CatalogWrong,
                    &ck,
                    format!(
                        "the receiver re-read it on its disk: SHA-256 {}, received as {}",
                        v.now, v.received
                    ),
                    c.size,
                );
            }
            return Ok(());
        }
    }
    if opts.deep && !baseline.catalog_sha256.is_empty() {
        let bytes = site.archive.read_index(&ck).await?;
        p.read_bytes += bytes.len() as u64;
        // An encrypted site's catalog comes back decrypted (and so authenticated); sealing
        // it again gives the stored bytes exactly (catalogs are sealed deterministically),
        // which the baseline describes.
        let mut sha = hex::encode(sha2::Sha256::digest(&bytes));
        if let Some(c) = site
            .crypt
            .as_ref()
            .filter(|_| sha != baseline.catalog_sha256)
        {
            sha = hex::encode(sha2::Sha256::digest(c.seal_index(&ck, &bytes)));
        }
        if sha != baseline.catalog_sha256 {
            p.find(
                Problem::CatalogWrong,
                &ck,
                format!(
                    "read back: SHA-256 {sha}, {} recorded",
                    baseline.catalog_sha256
                ),
                c.size,
            );
        }
    }
    Ok(())
}

fn is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why checking an image stopped the part: a server failed, or the manifest did.
enum Stop {
    Store(crate::store::StoreError),
    Manifest(ManifestError),
}

impl From<crate::store::StoreError> for Stop {
    fn from(e: crate::store::StoreError) -> Self {
        Stop::Store(e)
    }
}

impl From<ManifestError> for Stop {
    fn from(e: ManifestError) -> Self {
        Stop::Manifest(e)
    }
}

/// The files of a damaged image are no longer counted as archived on this site, so the
/// next sync stages them and packs them into a new image; the object stays, recorded as
/// unverified (it is billed until its minimum duration allows a delete).
fn requeue(
    m: &Manifest,
    site: &Site,
    iso: &IsoRecord,
    key: &str,
    listed: &HashMap<String, ObjectInfo>,
    p: &mut PartReport,
) -> Result<(), ManifestError> {
    let mut batch = manifest::ManifestBatch::default();
    let mut files = 0;
    for (_, content, rec) in m.archived(Some(&site.name))? {
        if rec.iso == iso.id {
            batch.remove_archived(&site.name, &content);
            files += 1;
        }
    }
    m.apply(batch)?;
    let mut rec = iso.clone();
    rec.uploads.retain(|u| u.site != site.name);
    m.put_iso(&mut rec)?;
    m.remove_image_object(&site.name, &iso.name)?;
    if let Some(o) = listed.get(key) {
        m.put_unverified(
            &site.name,
            &UnverifiedObject {
                key: key.to_string(),
                size: o.size,
                storage_class: None,
                modified: o.modified,
                reason: "failed a check: its bytes, size, class or fingerprint are not what was verified".into(),
                ours: true,
                found: manifest::now(),
            },
        )?;
    }
    m.flush()?;
    p.repaired.push(format!(
        "image {}: its {files} file(s) are queued for a new image on site {} (the next sync stages and packs them); the damaged object is kept on record, never deleted",
        iso.name, site.name
    ));
    Ok(())
}

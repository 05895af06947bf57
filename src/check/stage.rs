//! The stage part of a check: one LIST of `stage/` and `meta/` compared with the manifest,
//! by size and by the checksum the server computed (the SHA-256 Drive keeps, compared with
//! the content's; else the ETag or provider checksum recorded at staging, such as
//! OneDrive's QuickXorHash); where a
//! backend keeps none (a disk, SFTP, WebDAV), by whether the object was modified after it
//! was written. `--deep` downloads a rotating slice of the staged objects, within the site's
//! `deep-budget`, and checks their SHA-256. `--repair` stages damaged or missing objects
//! again from local originals that are not themselves suspect, and removes lomob's own
//! garbage; anything else is never touched.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{CheckOptions, PartReport, Problem};
use crate::keys::{self, META, SITE_MARK, STAGE};
use crate::manifest::{self, ContentId, Manifest, ManifestError, StagedRecord};
use crate::site::Site;

/// Slack for clocks when judging "modified after it was staged" by mtimes.
const CLOCK_SLACK: i64 = 300;

pub async fn check(
    m: &Manifest,
    site: &Site,
    opts: CheckOptions,
) -> Result<PartReport, ManifestError> {
    let mut p = PartReport::new("stage");
    let staged: HashMap<String, (ContentId, StagedRecord)> = m
        .staged(Some(&site.name))?
        .into_iter()
        .map(|(_, c, r)| (r.key.clone(), (c, r)))
        .collect();
    let mut listed = match site.stage.list(STAGE).await {
        Ok(l) => l,
        Err(e) => {
            p.fail(e.kind(), e.to_string());
            return Ok(p);
        }
    };
    match site.stage.list(META).await {
        Ok(l) => listed.extend(l),
        Err(e) => {
            p.fail(e.kind(), e.to_string());
            return Ok(p);
        }
    }
    p.checked = true;
    let mut seen = std::collections::HashSet::new();
    for o in &listed {
        p.looked_at += 1;
        seen.insert(o.key.as_str());
        if o.key.starts_with(META) {
            if o.key != SITE_MARK && !is_snapshot(&o.key) {
                p.find(
                    Problem::Foreign,
                    &o.key,
                    "not lomob's: left alone".into(),
                    o.size,
                );
            }
            continue;
        }
        let Some((content, rec)) = staged.get(&o.key) else {
            if keys::is_stage_key(&o.key) || keys::is_stage_partial_key(&o.key) {
                let f = p.find(
                    Problem::Garbage,
                    &o.key,
                    "a staged object the manifest does not know (left by an interrupted run, or by a manifest that is gone): billed for nothing".into(),
                    o.size,
                );
                f.fix = Some(format!("lomob check --site {} --stage --repair", site.name));
            } else {
                p.find(
                    Problem::Foreign,
                    &o.key,
                    "not lomob's: left alone".into(),
                    o.size,
                );
            }
            continue;
        };
        // An encrypted site stores ciphertext: the SHA-256 the server keeps is not the
        // content's, and the recorded checksum (below) is what it is compared with.
        let sha = match &site.crypt {
            Some(_) => None,
            None => m.content(content)?.map(|c| hex::encode(c.sha256)),
        };
        let problem = if o.size != rec.size {
            Some((
                Problem::WrongSize,
                format!("{} bytes, {} recorded", o.size, rec.size),
            ))
        } else if let (Some(now), Some(want)) = (&o.sha256, &sha) {
            // A SHA-256 the backend keeps with the object (user metadata, Drive's checksum).
            (!now.eq_ignore_ascii_case(want)).then(|| {
                (
                    Problem::WrongChecksum,
                    format!("the SHA-256 the server keeps is {now}, not {want}: other bytes"),
                )
            })
        } else if let Some((now, then)) = o
            .etag
            .as_ref()
            .zip(rec.etag.as_ref())
            .filter(|(now, then)| same_kind(now, then))
        {
            (now != then).then(|| {
                (
                    Problem::WrongChecksum,
                    format!("the server's checksum is {now}, {then} was recorded when it was staged: other bytes"),
                )
            })
        } else {
            o.modified.filter(|&t| t > rec.at + CLOCK_SLACK).map(|t| {
                (
                    Problem::Modified,
                    format!(
                        "modified at {}, after it was staged at {}",
                        manifest::rfc3339(t),
                        manifest::rfc3339(rec.at)
                    ),
                )
            })
        };
        if let Some((problem, message)) = problem {
            let f = p.find(problem, &o.key, message, o.size);
            f.content = Some(*content);
            f.fix = Some(format!("lomob check --site {} --stage --repair", site.name));
        }
    }
    for (key, (content, rec)) in &staged {
        if !seen.contains(key.as_str()) {
            let f = p.find(
                Problem::Missing,
                key,
                "recorded as staged, but not on the stage".into(),
                rec.size,
            );
            f.content = Some(*content);
            f.fix = Some(format!("lomob check --site {} --stage --repair", site.name));
        }
    }
    if opts.deep {
        deep(m, site, &staged, &mut p).await?;
    }
    if opts.repair {
        repair(m, site, &mut p).await?;
    }
    Ok(p)
}

/// Two checksums that can be compared: both a provider checksum of one kind (Drive's
/// SHA-256, OneDrive's QuickXorHash), or both plain ETags. A copy staged before lomob read
/// the provider's checksum has the service's ETag recorded, which says nothing of the new
/// listing's checksum: it is judged by its time instead.
fn same_kind(now: &str, then: &str) -> bool {
    use lomob_backends::object::provider_sum;
    provider_sum(now).map(|s| s.0) == provider_sum(then).map(|s| s.0)
}

fn is_snapshot(key: &str) -> bool {
    key.strip_prefix("meta/manifest-")
        .is_some_and(|n| n.ends_with(".jsonl") && !n.contains('/'))
}

/// Downloads staged objects in key order from where the last deep check stopped, until the
/// site's `deep-budget` is read, and checks each one's SHA-256.
async fn deep(
    m: &Manifest,
    site: &Site,
    staged: &HashMap<String, (ContentId, StagedRecord)>,
    p: &mut PartReport,
) -> Result<(), ManifestError> {
    let budget = site.config.deep_budget.bytes();
    let cursor = m
        .check_record(&site.name, "stage")?
        .and_then(|c| c.cursor)
        .unwrap_or_default();
    let mut keys: Vec<&String> = staged.keys().collect();
    keys.sort();
    // From the cursor to the end, then from the start: every object once per cycle.
    let split = keys.partition_point(|k| k.as_bytes() <= cursor.as_slice());
    let order: Vec<&String> = keys[split..]
        .iter()
        .chain(&keys[..split])
        .copied()
        .collect();
    let bad: std::collections::HashSet<String> =
        p.findings.iter().map(|f| f.what.clone()).collect();
    let dir = crate::config::data_dir().join("tmp");
    std::fs::create_dir_all(&dir).map_err(|e| ManifestError::Io {
        path: dir.clone(),
        source: e,
    })?;
    let tmp = dir.join(format!("check-{}-{}", site.name, std::process::id()));
    let mut read = 0u64;
    // Bytes a lomob receiver re-read on its own disk for us: they count against the budget
    // (its disk does the work) but never cross the network.
    let mut in_place = (0u64, 0u64);
    for key in order {
        if read + in_place.1 >= budget {
            p.notes.push(format!(
                "--deep read {} of {} staged objects' bytes this run (deep-budget {}); the next runs go on from {key}",
                lomob_backends::ByteSize(read + in_place.1),
                keys.len(),
                site.config.deep_budget
            ));
            break;
        }
        let (content, rec) = &staged[key];
        p.cursor = Some(key.as_bytes().to_vec());
        if bad.contains(key) {
            continue;
        }
        let Some(c) = m.content(content)? else {
            continue;
        };
        match site.stage.verify_in_place(key).await {
            Ok(Some(v)) => {
                in_place = (in_place.0 + 1, in_place.1 + rec.size);
                if !v.intact() {
                    let f = p.find(
                        Problem::WrongChecksum,
                        key,
                        format!(
                            "the receiver re-read it on its disk: SHA-256 {}, received as {}: its disk damaged it",
                            v.now, v.received
                        ),
                        rec.size,
                    );
                    f.content = Some(*content);
                    f.fix = Some(format!("lomob check --site {} --stage --repair", site.name));
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                p.fail(e.kind(), format!("--deep stopped: {e}"));
                break;
            }
        }
        let got = site.stage.download(key, &tmp).await;
        let _ = std::fs::remove_file(&tmp);
        match got {
            Ok((sha, len)) => {
                read += len;
                // Compared with the content (an encrypted site's download is decrypted and
                // authenticated on the way: its length is the plaintext's).
                if sha != c.sha256 || len != c.size {
                    let f = p.find(
                        Problem::WrongChecksum,
                        key,
                        format!(
                            "read back: SHA-256 {}, {} recorded: other bytes",
                            hex::encode(sha),
                            hex::encode(c.sha256)
                        ),
                        len,
                    );
                    f.content = Some(*content);
                    f.fix = Some(format!("lomob check --site {} --stage --repair", site.name));
                }
            }
            // Bytes that fail their checks (an encrypted object altered on the server):
            // this object's problem, and the check goes on.
            Err(e) if e.kind() == lomob_backends::ErrorKind::Integrity => {
                read += rec.size;
                let f = p.find(
                    Problem::WrongChecksum,
                    key,
                    format!("read back: {}", e.source),
                    rec.size,
                );
                f.content = Some(*content);
                f.fix = Some(format!("lomob check --site {} --stage --repair", site.name));
            }
            Err(e) => {
                p.fail(e.kind(), format!("--deep stopped: {e}"));
                break;
            }
        }
    }
    p.in_place = in_place.1;
    if in_place.0 > 0 {
        p.notes.push(format!(
            "--deep: the receiver re-read {} objects ({}) on its own disk and compared each with the SHA-256 it took on receipt; nothing was downloaded for them",
            in_place.0,
            lomob_backends::ByteSize(in_place.1)
        ));
    }
    p.read_bytes = read;
    Ok(())
}

/// Stages damaged or missing objects again from local originals whose stat is the
/// recorded one (a file itself suspect is never used), and deletes lomob's garbage.
async fn repair(m: &Manifest, site: &Site, p: &mut PartReport) -> Result<(), ManifestError> {
    let originals = originals(m)?;
    let findings = p.findings.clone();
    for f in findings {
        match f.problem {
            Problem::Garbage => match site.stage.delete(&f.what).await {
                Ok(()) => p.repaired.push(format!("deleted {} (garbage)", f.what)),
                Err(e) => p.notes.push(format!("could not delete {}: {e}", f.what)),
            },
            Problem::Missing | Problem::WrongSize | Problem::WrongChecksum | Problem::Modified => {
                let Some(content) = f.content else { continue };
                let Some(c) = m.content(&content)? else {
                    continue;
                };
                let Some(path) = originals.get(&content) else {
                    p.notes.push(format!(
                        "{}: no local original with its recorded size, mtime and inode to stage again from{}",
                        f.what,
                        if m.has_copy(&content)? { "" } else { "; it has no other copy" }
                    ));
                    continue;
                };
                match site.stage.put_file(&f.what, path, c.size, &c.sha256).await {
                    Ok(info) => {
                        let mut b = manifest::ManifestBatch::default();
                        b.put_staged(
                            &site.name,
                            &content,
                            &StagedRecord {
                                key: f.what.clone(),
                                size: info.size,
                                etag: info.etag,
                                at: manifest::now(),
                            },
                        );
                        m.apply(b)?;
                        p.repaired
                            .push(format!("staged {} again from {}", f.what, path.display()));
                    }
                    Err(e) => p
                        .notes
                        .push(format!("could not stage {} again: {e}", f.what)),
                }
            }
            _ => {}
        }
    }
    m.flush()
}

/// For each present content, one local file holding it whose stat is the recorded one.
fn originals(m: &Manifest) -> Result<HashMap<ContentId, PathBuf>, ManifestError> {
    let roots: HashMap<u32, Vec<u8>> = m.roots()?.into_iter().map(|r| (r.id, r.path)).collect();
    let mut out = HashMap::new();
    for kv in m.files() {
        let (root, rel, f) = kv?;
        if f.is_deleted() || out.contains_key(&f.current().content) {
            continue;
        }
        let Some(r) = roots.get(&root) else { continue };
        let mut abs = r.clone();
        abs.push(b'/');
        abs.extend_from_slice(&rel);
        let path = crate::platform::names::path_of(&abs);
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let same = md.is_file()
            && md.len() == f.size
            && crate::scan::walk::mtime_ns(&md) == f.mtime_ns
            && crate::platform::file::identity(&md, || path.clone()).inode == f.inode;
        if same {
            out.insert(f.current().content, path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::same_kind;

    /// A OneDrive copy staged before lomob read QuickXorHashes has Graph's eTag recorded:
    /// not compared with a listing's hash (it would always differ), judged by time instead.
    #[test]
    fn checksums_of_different_kinds_are_not_compared() {
        assert!(same_kind("quickxor:AAA=", "quickxor:BBB="));
        assert!(same_kind("sha256:ab", "sha256:cd"));
        assert!(same_kind(
            "d41d8cd98f00b204e9800998ecf8427e",
            "9e107d9d372bb6826bd81d3542a419d6"
        ));
        assert!(!same_kind(
            "quickxor:AAA=",
            "{3B131E1C-7D81-20AF-80D0-450D00000000},10"
        ));
        assert!(!same_kind("sha256:ab", "md5:cd"));
    }
}

//! What must hold after every chaos iteration, checked from outside lomob wherever that is
//! possible (the servers' own listings, the restored bytes), not from its own claims:
//! - the manifest opens, `status` counts what the servers' listings show, its kept totals
//!   equal a recount from the records, and `check` finds the servers holding what it
//!   records;
//! - every file, deleted ones included, comes back byte-identical through `restore` from
//!   each site on its own;
//! - no archive object was overwritten or removed, no image is stored twice, and every
//!   image on a server is one the manifest records;
//! - no multipart upload is open and no `.partial` object is left.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::rig::{content, Chaos, Rig};

/// Archive objects seen so far: where, and their size and ETag (or SHA-256 on SFTP).
#[derive(Default)]
pub struct Seen {
    archive: BTreeMap<String, (u64, String)>,
}

/// Checks every invariant; `iteration` names the restore folders.
pub fn check(c: &mut Chaos, rig: &Rig, seen: &mut Seen, iteration: usize) {
    status_agrees(rig);
    servers_agree(rig);
    no_open_uploads(c, rig);
    archive_never_rewritten(rig, seen);
    images_recorded_once(rig);
    for site in rig.sites.names.clone() {
        let dir = rig.dir(&format!("restored-{iteration}-{site}"));
        restore_all(c, rig, &site, &dir);
        compare(c, rig, &dir, &site);
        std::fs::remove_dir_all(&dir).ok();
    }
    c.tally.iterations += 1;
}

/// The manifest opens, and `status` agrees with what the servers hold: per site, as many
/// staged copies as `stage/` objects, as many images as `.iso` objects, and nothing left
/// unsafe after a completed backup.
fn status_agrees(rig: &Rig) {
    let out = rig.run(&["status"]);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for site in v["sites"].as_array().unwrap() {
        let name = site["name"].as_str().unwrap();
        let n = |k: &str| site[k]["files"].as_u64().unwrap_or(0);
        let (stage, images) = held(rig, name);
        assert_eq!(
            n("staged") + n("waiting_to_free"),
            stage,
            "site {name}: status counts other staged copies than the stage holds: {site}"
        );
        assert_eq!(
            site["images"].as_u64().unwrap_or(0),
            images,
            "site {name}: status counts other images than the archive holds: {site}"
        );
        assert_eq!(n("not_yet_safe"), 0, "site {name}: {site}");
    }
    // The totals above are counters every write keeps in its own transaction: recounted
    // from the records after kills anywhere, none may have drifted.
    let out = rig.run(&["status", "--recount"]);
    assert!(
        out.status.success(),
        "status --recount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["recount"]["drift"],
        serde_json::json!([]),
        "kept totals drifted from the records"
    );
}

/// Staged objects and images a site's servers hold, counted from their own listings.
fn held(rig: &Rig, site: &str) -> (u64, u64) {
    let is_staged = |k: &str| {
        k.strip_prefix("stage/")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let is_image = |k: &str| k.starts_with("archive/") && k.ends_with(".iso");
    let count =
        |keys: Vec<String>, f: &dyn Fn(&str) -> bool| keys.iter().filter(|k| f(k)).count() as u64;
    let bucket = |b: &str| -> Vec<String> {
        list_bucket(&rig.sites.moto, b)
            .into_iter()
            .map(|o| o.0)
            .collect()
    };
    let folder = |d: &std::path::Path| crate::rig::files(d);
    match site {
        "deep" => (
            count(bucket(&rig.sites.stage_buckets[0]), &is_staged),
            count(bucket(&rig.sites.archive_buckets[0].1), &is_image),
        ),
        "vault" => (
            count(folder(&rig.dir("vault-stage")), &is_staged),
            count(bucket(&rig.sites.archive_buckets[1].1), &is_image),
        ),
        _ => (
            count(folder(&rig.sites.sftp_dirs[0]), &is_staged),
            count(folder(&rig.sites.sftp_dirs[1]), &is_image),
        ),
    }
}

/// `check` compares the manifest with the servers' listings (and each image's HEAD):
/// nothing missing, nothing of the wrong size or checksum, no garbage of lomob's own.
fn servers_agree(rig: &Rig) {
    let out = rig.run(&["check", "--all", "--stage", "--archive"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "check printed no JSON (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    for site in v["sites"].as_array().unwrap() {
        for part in site["parts"].as_array().unwrap() {
            assert_eq!(part["checked"], true, "{part}");
            assert!(
                part["findings"].as_array().unwrap().is_empty(),
                "site {}: the servers do not hold what the manifest records: {part}",
                site["site"]
            );
        }
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn no_open_uploads(c: &mut Chaos, rig: &Rig) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let buckets = rig
        .sites
        .stage_buckets
        .iter()
        .chain(rig.sites.archive_buckets.iter().map(|(_, b)| b));
    for b in buckets {
        let client = crate::support::s3_client(
            &rig.sites.moto,
            "k",
            "s",
            b,
            lomob_backends::StorageClass::Standard,
        );
        let open = rt.block_on(client.list_multipart_uploads("")).unwrap();
        if !open.is_empty() {
            eprintln!("chaos: uploads left open in {b}: {open:?}");
        }
        c.tally.open_uploads += open.len() as u64;
    }
}

/// Keys, sizes and ETags of a bucket, by an anonymous ListObjectsV2 (moto does not ask for
/// a signature), so the check does not go through lomob's own client.
pub fn list_bucket(endpoint: &str, bucket: &str) -> Vec<(String, u64, String)> {
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut target = format!("/{bucket}?list-type=2");
        if let Some(t) = &token {
            target.push_str(&format!(
                "&continuation-token={}",
                lomob_backends::uri::encode(t)
            ));
        }
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {target} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(
            body.starts_with("HTTP/1.") && body.contains(" 200 "),
            "{body}"
        );
        for item in body.split("<Contents>").skip(1) {
            let field = |name: &str| {
                item.split(&format!("<{name}>"))
                    .nth(1)
                    .and_then(|r| r.split(&format!("</{name}>")).next())
                    .unwrap_or("")
                    .to_string()
            };
            out.push((
                field("Key"),
                field("Size").parse().unwrap(),
                field("ETag").replace("&#34;", "").replace(['"'], ""),
            ));
        }
        token = body
            .split("<NextContinuationToken>")
            .nth(1)
            .and_then(|r| r.split("</NextContinuationToken>").next())
            .map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

/// Every object on the servers (stage and archive), as `where/key` with size and ETag or
/// SHA-256, and whether it is an archive object.
fn server_objects(rig: &Rig) -> Vec<(String, u64, String, bool)> {
    let mut all = Vec::new();
    for b in &rig.sites.stage_buckets {
        for (k, size, etag) in list_bucket(&rig.sites.moto, b) {
            all.push((format!("{b}/{k}"), size, etag, false));
        }
    }
    for (_, b) in &rig.sites.archive_buckets {
        for (k, size, etag) in list_bucket(&rig.sites.moto, b) {
            let archive = k.starts_with("archive/");
            all.push((format!("{b}/{k}"), size, etag, archive));
        }
    }
    for dir in &rig.sites.sftp_dirs {
        let archive = dir.ends_with("archive");
        for rel in crate::rig::files(dir) {
            let p = dir.join(&rel);
            let bytes = std::fs::read(&p).unwrap_or_default();
            let sum = hex(&Sha256::digest(&bytes));
            let is_image = archive && rel.starts_with("archive/");
            all.push((p.display().to_string(), bytes.len() as u64, sum, is_image));
        }
    }
    all
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// No `.partial` object anywhere; every archive object seen before is still there with the
/// same size and ETag (nothing archived is ever overwritten or deleted).
fn archive_never_rewritten(rig: &Rig, seen: &mut Seen) {
    let now = server_objects(rig);
    for (key, _, _, _) in &now {
        assert!(
            !key.contains(".partial") && !key.contains(".lomob-tmp"),
            "a temporary object was left on a server: {key}"
        );
    }
    let current: BTreeMap<&String, (u64, &String)> = now
        .iter()
        .filter(|o| o.3)
        .map(|(k, s, e, _)| (k, (*s, e)))
        .collect();
    for (key, (size, etag)) in &seen.archive {
        let Some((s, e)) = current.get(key) else {
            panic!("archive object {key} disappeared");
        };
        assert!(
            *s == *size && *e == etag,
            "archive object {key} was overwritten: {size} bytes, {etag} then {s} bytes, {e}"
        );
    }
    for (k, (s, e)) in current {
        seen.archive.insert(k.clone(), (s, e.clone()));
    }
}

/// From the manifest's export: per site, every content is archived in one image at most;
/// and every image object on a server is one the manifest records for that site (an
/// image uploaded and then forgotten would be money spent twice).
fn images_recorded_once(rig: &Rig) {
    let file = rig.dir("export.jsonl");
    let out = rig.run(&["manifest", "export", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).ok();
    let mut recorded: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut images_of: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(iso) = v.get("iso") {
            for u in iso["uploads"].as_array().into_iter().flatten() {
                let name = u["key"].as_str().unwrap().rsplit('/').next().unwrap();
                recorded
                    .entry(u["site"].as_str().unwrap().to_string())
                    .or_default()
                    .insert(name.to_string());
            }
        }
        if let Some(a) = v.get("archived") {
            images_of
                .entry((
                    a["site"].as_str().unwrap().to_string(),
                    a["content"].as_str().unwrap().to_string(),
                ))
                .or_default()
                .insert(a["iso"].as_u64().unwrap());
        }
    }
    for ((site, content), isos) in &images_of {
        assert!(
            isos.len() == 1,
            "site {site}: content {content} is archived in {} images",
            isos.len()
        );
    }
    let on_server = |site: &str| -> Vec<String> {
        if let Some((_, b)) = rig.sites.archive_buckets.iter().find(|(s, _)| s == site) {
            return list_bucket(&rig.sites.moto, b)
                .into_iter()
                .map(|o| o.0)
                .filter(|k| k.starts_with("archive/") && k.ends_with(".iso"))
                .collect();
        }
        let dir = rig
            .sites
            .sftp_dirs
            .iter()
            .find(|d| d.ends_with("archive"))
            .unwrap();
        crate::rig::files(dir)
            .into_iter()
            .filter(|k| k.starts_with("archive/") && k.ends_with(".iso"))
            .collect()
    };
    for site in &rig.sites.names {
        for key in on_server(site) {
            let name = key.rsplit('/').next().unwrap();
            assert!(
                recorded.get(site).is_some_and(|r| r.contains(name)),
                "site {site}: image {key} is on the server but not in the manifest"
            );
        }
    }
}

/// `restore --site SITE --deleted --to DIR`, run again while it waits for a thaw (moto
/// thaws at once, so the second run reads the image).
pub fn restore_all(c: &mut Chaos, rig: &Rig, site: &str, dir: &Path) {
    let to = dir.to_str().unwrap();
    for _ in 0..4 {
        let out = rig.run(&["restore", "--site", site, "--deleted", "--to", to]);
        let code = out.status.code();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        c.tally.restores += 1;
        for r in v["requests"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            let n = |k: &str| r[k].as_u64().unwrap_or(0);
            let (writes, reads) = (n("put") + n("post") + n("list"), n("get") + n("head"));
            c.tally.restore_requests += writes + reads;
            if site != "friend" {
                // Deep Archive list prices, with each RestoreObject (a POST) at the bulk
                // tier's request price.
                c.tally.restore_usd += n("post") as f64 * 0.025 / 1000.0
                    + (n("put") + n("list")) as f64 * 0.05 / 1000.0
                    + reads as f64 * 0.0004 / 1000.0;
            }
        }
        match code {
            Some(0) => return,
            Some(7) => continue,
            _ => panic!("restore from {site} failed (exit {code:?}):\n{err}"),
        }
    }
    panic!("restore from {site} still waiting after 4 runs");
}

/// Every expected file is in `dir`, byte-identical; nothing else is, and no temporary.
pub fn compare(c: &mut Chaos, rig: &Rig, dir: &Path, site: &str) {
    let expected = rig.lib.expected();
    let root = rig.lib.root.display().to_string();
    let prefix = root.trim_start_matches('/');
    let mut got: BTreeSet<String> = crate::rig::files(dir).into_iter().collect();
    for (rel, e) in &expected {
        let key = format!("{prefix}/{rel}");
        let p = dir.join(&key);
        let got_bytes = std::fs::read(&p);
        let ok = got_bytes
            .as_ref()
            .is_ok_and(|b| *b == content(e.seed, e.len));
        c.tally.files_checked += 1;
        if !ok {
            c.tally.files_lost += 1;
            eprintln!(
                "chaos: {rel} did not come back intact from {site}: expected {} bytes (seed {}), got {:?}",
                e.len,
                e.seed,
                got_bytes.map(|b| b.len())
            );
        }
        got.remove(&key);
    }
    assert!(
        got.is_empty(),
        "restore from {site} wrote what the library never held: {got:?}"
    );
}

//! End-to-end tests of `lomob restore` and `lomob recover`: round trips from a local-disk
//! site (stage and image ranges, versions, dates, deleted files, files already there),
//! Deep Archive thaws on moto (one RestoreObject per image, the waiting and rerun paths
//! through a proxy that keeps a thaw "in progress"), one photo out of a large image,
//! recovery from nothing with awkward names, hostile catalogs and snapshots, and kill -9.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::support::cloud::{cloud, forward, Cloud};
use crate::support::{age_manifest, assert_code, bytes, put, stderr, walk, Env, NS};

fn local_site(env: &Env) -> String {
    let root = env.path().display().to_string();
    env.config(&format!(
        r#"
[library]
roots = ["{root}/lib"]

[sites.nas]
pack-threshold = "1GB"
stage = {{ kind = "fs", root = "{root}/nas-stage" }}
archive = {{ kind = "fs", root = "{root}/nas-archive" }}
"#
    ))
}

/// Where `original` lands under `dir`.
fn landed(dir: &Path, original: &Path) -> PathBuf {
    dir.join(original.strip_prefix("/").unwrap())
}

/// The file at `restored` has the bytes and mtime (to the nanosecond) of `original`.
fn same(original: &Path, content: &[u8], mtime_ns: i64, dir: &Path) {
    let r = landed(dir, original);
    let got = std::fs::read(&r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
    assert!(
        got == content,
        "{} differs from what was backed up",
        r.display()
    );
    let md = std::fs::metadata(&r).unwrap();
    assert_eq!(
        md.mtime() * NS + md.mtime_nsec(),
        mtime_ns,
        "{}",
        r.display()
    );
}

/// No temporary file is left anywhere under `dir`.
fn no_temporaries(dir: &Path) {
    for e in walk(dir) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".lomob-restore-"),
            "left behind: {}",
            e.display()
        );
    }
}

struct Lib {
    files: Vec<(PathBuf, Vec<u8>, i64)>,
}

fn small_library(env: &Env) -> Lib {
    let base = 1_650_000_000 * NS + 123_456_789;
    let a = bytes(1, 100_000);
    let specs: Vec<(&[u8], Vec<u8>)> = vec![
        (b"2020/a.jpg", a.clone()),
        (b"2020/copy of a.jpg", a),
        (b"2021/b.jpg", bytes(2, 300_000)),
        (b"empty.txt", Vec::new()),
        (b"deep/x/y/z/c.mov", bytes(3, 50_000)),
        (b"2022/\xff\xfe raw.jpg", bytes(4, 20_000)),
    ];
    let files = specs
        .into_iter()
        .enumerate()
        .map(|(i, (rel, content))| {
            let t = base + i as i64 * 86_400 * NS;
            (put(env, rel, &content, t), content, t)
        })
        .collect();
    Lib { files }
}

#[test]
fn restore_from_a_local_site_brings_back_every_byte_and_mtime_and_leaves_others_alone() {
    let env = Env::new();
    let cfg = local_site(&env);
    let mut lib = small_library(&env);
    env.json(&["--config", &cfg, "backup"], 0);
    env.json(
        &["--config", &cfg, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    // One more file after the image: it is only staged.
    let late = bytes(5, 70_000);
    let t = 1_700_000_000 * NS + 5;
    lib.files
        .push((put(&env, b"2023/late.jpg", &late, t), late, t));
    env.json(&["--config", &cfg, "backup"], 0);

    let dir = env.path().join("restored");
    let d = dir.to_str().unwrap();
    let r = restore_json(&env, &cfg, &["--to", d], 0);
    assert_eq!(r["restored"], 7, "{r}");
    assert_eq!(r["from_stage"], 1, "{r}");
    assert_eq!(r["from_images"], 5, "{r}");
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
    // Two paths of one content are fetched once.
    let wanted: u64 = lib.files.iter().map(|f| f.1.len() as u64).sum::<u64>() - 100_000;
    assert!(
        r["bytes_downloaded"].as_u64().unwrap() <= wanted + (64 << 10),
        "{r}"
    );
    for (p, content, mtime) in &lib.files {
        same(p, content, *mtime, &dir);
    }
    no_temporaries(&dir);

    // Again: everything is already there, nothing is fetched.
    let r = restore_json(&env, &cfg, &["--to", d], 0);
    assert_eq!(r["restored"], 0, "{r}");
    assert_eq!(r["already_there"], 7, "{r}");
    assert_eq!(r["bytes_downloaded"], 0, "{r}");

    // A different file in place is left alone and reported (exit 3), unless --overwrite.
    let b = landed(&dir, &lib.files[2].0);
    std::fs::write(&b, b"edited since").unwrap();
    let r = restore_json(&env, &cfg, &["--to", d], 3);
    assert_eq!(r["left_alone"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(std::fs::read(&b).unwrap(), b"edited since");
    let r = restore_json(&env, &cfg, &["--to", d, "--overwrite"], 0);
    assert_eq!(r["restored"], 1, "{r}");
    same(&lib.files[2].0, &lib.files[2].1, lib.files[2].2, &dir);

    // Paths relative to a root, and globs over the whole path.
    let one = env.path().join("one");
    let r = restore_json(
        &env,
        &cfg,
        &["2021/b.jpg", "--to", one.to_str().unwrap()],
        0,
    );
    assert_eq!(r["restored"], 1, "{r}");
    let glob = env.path().join("glob");
    let pattern = format!("{}/**/*.jpg", env.lib().display());
    let r = restore_json(&env, &cfg, &[&pattern, "--to", glob.to_str().unwrap()], 0);
    assert_eq!(r["restored"], 5, "{r}");
    let r = restore_json(
        &env,
        &cfg,
        &["nothing/*.png", "--to", glob.to_str().unwrap()],
        3,
    );
    assert_eq!(r["unmatched"][0], "nothing/*.png", "{r}");
}

#[test]
fn versions_dates_and_deleted_files() {
    let env = Env::new();
    let cfg = local_site(&env);
    let lib = small_library(&env);
    env.json(&["--config", &cfg, "backup"], 0);
    env.json(
        &["--config", &cfg, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    // The first backup was ten days ago; b.jpg changed since and a.jpg is gone.
    age_manifest(&env, &cfg, 10 * 86_400);
    let b = &lib.files[2];
    let b2 = bytes(9, 310_000);
    put(&env, b"2021/b.jpg", &b2, b.2 + 3 * 86_400 * NS);
    std::fs::remove_file(&lib.files[0].0).unwrap();
    env.json(&["--config", &cfg, "backup"], 0);

    let five_days_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(5 * 24);
    let at = five_days_ago.to_string();
    let old = env.path().join("old");
    let r = restore_json(
        &env,
        &cfg,
        &["2021/b.jpg", "--at", &at, "--to", old.to_str().unwrap()],
        0,
    );
    assert_eq!(r["restored"], 1, "{r}");
    same(&b.0, &b.1, b.2, &old);
    let new = env.path().join("new");
    restore_json(
        &env,
        &cfg,
        &[
            "2021/b.jpg",
            "--version",
            "2",
            "--to",
            new.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(std::fs::read(landed(&new, &b.0)).unwrap(), b2);
    // Version 1 is the oldest.
    let v1 = env.path().join("v1");
    restore_json(
        &env,
        &cfg,
        &["2021/b.jpg", "--version", "1", "--to", v1.to_str().unwrap()],
        0,
    );
    assert_eq!(std::fs::read(landed(&v1, &b.0)).unwrap(), b.1);

    // A deleted file only with --deleted; --at before the deletion brings it back too.
    let del = env.path().join("del");
    let r = restore_json(
        &env,
        &cfg,
        &["2020/a.jpg", "--to", del.to_str().unwrap()],
        0,
    );
    assert_eq!(r["restored"], 0, "{r}");
    assert_eq!(r["deleted_left_out"], 1, "{r}");
    let r = restore_json(
        &env,
        &cfg,
        &["2020/a.jpg", "--deleted", "--to", del.to_str().unwrap()],
        0,
    );
    assert_eq!(r["restored"], 1, "{r}");
    same(&lib.files[0].0, &lib.files[0].1, lib.files[0].2, &del);

    // A date that is not one is a usage error that says what a date looks like.
    let out = env
        .cmd()
        .args(["--config", &cfg, "restore", "--at", "last tuesday", "--to"])
        .arg(&del)
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("2024-05-01"), "{}", stderr(&out));
}

#[test]
fn a_corrupt_staged_copy_is_an_integrity_error_and_nothing_takes_its_name() {
    let env = Env::new();
    let cfg = local_site(&env);
    let p = put(
        &env,
        b"only/staged.jpg",
        &bytes(7, 40_000),
        1_600_000_000 * NS,
    );
    env.json(&["--config", &cfg, "backup"], 0);
    let staged: Vec<PathBuf> = walk(&env.path().join("nas-stage"))
        .into_iter()
        .filter(|f| f.parent().unwrap().ends_with("stage"))
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    std::fs::write(&staged[0], bytes(8, 40_000)).unwrap();
    let dir = env.path().join("r");
    let r = restore_json(&env, &cfg, &["--to", dir.to_str().unwrap()], 6);
    assert_eq!(r["failed"][0]["kind"], "integrity", "{r}");
    assert!(!landed(&dir, &p).exists());
    no_temporaries(&dir);
}

#[test]
fn names_that_could_leave_the_folder_are_refused() {
    let env = Env::new();
    let cfg = local_site(&env);
    let lib = small_library(&env);
    env.json(&["--config", &cfg, "backup"], 0);
    // A hostile manifest: a root with `..` in a file name, imported as a snapshot would be.
    let file = env.path().join("m.jsonl");
    env.cmd()
        .args(["--config", &cfg, "manifest", "export"])
        .arg(&file)
        .assert()
        .success();
    let text = std::fs::read_to_string(&file).unwrap();
    let evil = text.replace("2021/b.jpg", "../../../escaped.jpg");
    assert_ne!(evil, text);
    std::fs::write(&file, evil).unwrap();
    std::fs::remove_dir_all(env.db()).unwrap();
    let out = env
        .cmd()
        .args(["--config", &cfg, "manifest", "import"])
        .arg(&file)
        .output()
        .unwrap();
    if out.status.success() {
        let dir = env.path().join("jail/inside");
        let r = restore_json(&env, &cfg, &["--to", dir.to_str().unwrap()], 3);
        assert_eq!(r["refused"].as_array().unwrap().len(), 1, "{r}");
        assert!(!env.path().join("jail/escaped.jpg").exists());
        assert!(walk(&env.path().join("jail"))
            .iter()
            .all(|p| p.starts_with(&dir)));
    } else {
        // The import itself refuses it: nothing can restore it either.
        assert!(stderr(&out).contains("escaped.jpg"), "{}", stderr(&out));
    }
    drop(lib);
}

// ---- S3 with Deep Archive semantics (moto), through a proxy that sees every request ----

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::http_proxy::{Action, Rule};
use crate::support::s3_client;

/// RestoreObject requests seen.
fn thaws(c: &Cloud) -> usize {
    c.proxy.traffic.count("POST", "?restore")
}

/// GETs of images (not of their catalogs).
fn image_gets(c: &Cloud) -> usize {
    c.proxy
        .traffic
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("GET ") && l.contains(".iso") && !l.contains(".catalog.json"))
        .count()
}

fn restore_json(env: &Env, cfg: &str, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["--config", cfg, "restore"];
    all.extend_from_slice(args);
    env.json(&all, code)
}

#[test]
fn deep_archive_restore_thaws_each_image_once_and_brings_back_every_byte() {
    let env = Env::new();
    let Some(c) = cloud(&env, forward(), "") else {
        return;
    };
    let lib = small_library(&env);
    env.json(&["--config", &c.cfg, "backup"], 0);
    let r = env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    let image = format!("archive/{}", r[0]["images"][0].as_str().unwrap());
    // The image is frozen: a plain GET fails as such.
    let s3 = s3_client(
        &c.endpoint,
        "k",
        "s",
        &c.archive_bucket,
        lomob_backends::StorageClass::DeepArchive,
    );
    let got = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(s3.get_object(&image, Some(0..10)));
    assert_eq!(
        got.err().map(|e| e.kind()),
        Some(lomob_backends::ErrorKind::Frozen)
    );

    // Deep Archive has no expedited tier: refused before anything is sent.
    let dir = env.path().join("back");
    let d = dir.to_str().unwrap();
    let out = env
        .cmd()
        .args([
            "--config",
            &c.cfg,
            "restore",
            "--to",
            d,
            "--tier",
            "expedited",
        ])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("no expedited"), "{}", stderr(&out));

    // A dry run says a thaw is needed and what it costs, and sends only HEADs.
    let before = c.proxy.traffic.log.lock().unwrap().len();
    let r = restore_json(&env, &c.cfg, &["--to", d, "--dry-run"], 0);
    assert_eq!(r["images"][0]["thaw"], "frozen", "{r}");
    assert_eq!(r["estimate"]["thaw_requests"], 1, "{r}");
    let tiers: Vec<&str> = r["estimate"]["thaw"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["bulk", "standard"], "{r}");
    assert_eq!(r["estimate"]["wait_hours"], 48.0, "{r}");
    assert_eq!(r["files"].as_array().unwrap().len(), 6, "{r}");
    let sent: Vec<String> = c.proxy.traffic.log.lock().unwrap()[before..].to_vec();
    assert!(sent.iter().all(|l| l.starts_with("HEAD ")), "{sent:?}");
    assert!(!dir.exists(), "a dry run writes nothing");

    // The first run asks for the thaw and says when to come back (exit 7).
    let r = restore_json(&env, &c.cfg, &["--to", d], 7);
    assert_eq!(thaws(&c), 1);
    assert_eq!(r["waiting"][0]["tier"], "bulk", "{r}");
    assert!(r["run_later"].as_str().unwrap().contains("restore"), "{r}");
    assert_eq!(r["restored"], 1, "only the empty file needs no thaw: {r}");
    // The rerun finds it thawed (moto thaws at once) and finishes without asking again.
    let r = restore_json(&env, &c.cfg, &["--to", d], 0);
    assert_eq!(thaws(&c), 1, "no second RestoreObject");
    assert_eq!(r["restored"], 5, "{r}");
    assert_eq!(r["already_there"], 1, "{r}");
    for (p, content, mtime) in &lib.files {
        same(p, content, *mtime, &dir);
    }
    no_temporaries(&dir);
}

#[test]
fn a_thaw_in_progress_is_waited_for_or_left_for_a_rerun_and_never_asked_twice() {
    let env = Env::new();
    // After the RestoreObject, the image stays "in progress" for three HEADs.
    let asked = Arc::new(AtomicBool::new(false));
    let heads = Arc::new(AtomicUsize::new(0));
    let (a, h) = (asked.clone(), heads.clone());
    let rule: Arc<Rule> = Arc::new(move |s| {
        let image = s.target.contains(".iso") && !s.target.contains(".catalog.json");
        if s.method == "POST" && s.target.contains("?restore") {
            a.store(true, Ordering::SeqCst);
        }
        if !image || !a.load(Ordering::SeqCst) {
            return Action::Forward;
        }
        match s.method {
            "HEAD" if h.fetch_add(1, Ordering::SeqCst) < 3 => {
                Action::SetHeaders(vec![("x-amz-restore", "ongoing-request=\"true\"".into())])
            }
            "GET" if h.load(Ordering::SeqCst) <= 3 => Action::Refuse(403, "InvalidObjectState"),
            _ => Action::Forward,
        }
    });
    let Some(c) = cloud(&env, rule, "") else {
        return;
    };
    let lib = small_library(&env);
    env.json(&["--config", &c.cfg, "backup"], 0);
    env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    let dir = env.path().join("back");
    let d = dir.to_str().unwrap();
    restore_json(&env, &c.cfg, &["--to", d], 7);
    assert_eq!(thaws(&c), 1);
    // The pending thaw is in the manifest, and status shows it without asking the server.
    let before = c.proxy.traffic.log.lock().unwrap().len();
    let st = env.json(&["--config", &c.cfg, "status"], 0);
    assert_eq!(st["sites"][0]["thaws_pending"][0]["tier"], "bulk", "{st}");
    assert_eq!(c.proxy.traffic.log.lock().unwrap().len(), before);
    // A rerun while it is still thawing: told to wait again, nothing asked again.
    let out = env
        .cmd()
        .args(["--config", &c.cfg, "restore", "--to", d])
        .output()
        .unwrap();
    assert_code(&out, 7);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("waiting for 1 thaw"), "{text}");
    assert!(text.contains("ready by"), "{text}");
    assert!(text.contains(&format!("restore --to {d}")), "{text}");
    assert_eq!(thaws(&c), 1);
    assert_eq!(heads.load(Ordering::SeqCst), 1);
    // --wait polls (one HEAD per poll) until it is thawed, then reads it.
    let out = env
        .cmd()
        .env("LOMOB_THAW_POLL_SECONDS", "0.05")
        .args(["--config", &c.cfg, "restore", "--to", d, "--wait", "--json"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["restored"], 5, "{r}");
    assert_eq!(heads.load(Ordering::SeqCst), 4, "one HEAD per poll");
    assert_eq!(thaws(&c), 1, "no second RestoreObject");
    for (p, content, mtime) in &lib.files {
        same(p, content, *mtime, &dir);
    }
    let st = env.json(&["--config", &c.cfg, "status"], 0);
    assert!(
        st["sites"][0]["thaws_pending"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{st}"
    );
}

/// Found by the chaos suite (#15): a thawed copy that expired between the look and the read
/// failed the restore (exit 1, "restore (thaw) it before reading"). It is now asked for
/// again, with a warning; moto answers that it is thawed, so the same run reads it.
#[test]
fn a_thawed_copy_that_expires_mid_restore_is_thawed_again_not_failed() {
    let env = Env::new();
    // The first GET of the image after a thaw was asked for fails as frozen once.
    let asked = Arc::new(AtomicBool::new(false));
    let expired = Arc::new(AtomicBool::new(false));
    let (a, x) = (asked.clone(), expired.clone());
    let rule: Arc<Rule> = Arc::new(move |s| {
        let image = s.target.contains(".iso") && !s.target.contains(".catalog.json");
        if s.method == "POST" && s.target.contains("?restore") {
            a.store(true, Ordering::SeqCst);
        }
        if image && s.method == "GET" && a.load(Ordering::SeqCst) && !x.swap(true, Ordering::SeqCst)
        {
            return Action::Refuse(403, "InvalidObjectState");
        }
        Action::Forward
    });
    let Some(c) = cloud(&env, rule, "") else {
        return;
    };
    let lib = small_library(&env);
    env.json(&["--config", &c.cfg, "backup"], 0);
    env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    let dir = env.path().join("back");
    let d = dir.to_str().unwrap();
    restore_json(&env, &c.cfg, &["--to", d], 7);
    assert_eq!(thaws(&c), 1);
    // Thawed (moto thaws at once), but the copy expires as it is read: asked for again.
    let r = restore_json(&env, &c.cfg, &["--to", d], 0);
    assert!(expired.load(Ordering::SeqCst));
    assert_eq!(thaws(&c), 2, "{r}");
    assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    assert!(warnings[0].as_str().unwrap().contains("frozen"), "{r}");
    for (p, content, mtime) in &lib.files {
        same(p, content, *mtime, &dir);
    }
}

#[test]
fn one_photo_from_a_large_image_costs_two_gets_and_its_own_bytes() {
    let env = Env::new();
    let Some(c) = cloud(&env, forward(), "") else {
        return;
    };
    for i in 0..24u32 {
        put(
            &env,
            format!("big/{i:02}.mov").as_bytes(),
            &bytes(100 + i, 1 << 20),
            (1_600_000_000 + i as i64) * NS,
        );
    }
    let photo = bytes(7, 300_000);
    let t = 1_600_000_012 * NS + 7;
    let p = put(&env, b"big/12-photo.jpg", &photo, t);
    env.json(&["--config", &c.cfg, "backup"], 0);
    env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    let (gets0, bytes0) = (c.proxy.traffic.count("GET", ""), c.proxy.traffic.bytes());
    let dir = env.path().join("one");
    let d = dir.to_str().unwrap();
    restore_json(&env, &c.cfg, &["big/12-photo.jpg", "--to", d], 7);
    let r = restore_json(&env, &c.cfg, &["big/12-photo.jpg", "--to", d], 0);
    assert_eq!(r["restored"], 1, "{r}");
    same(&p, &photo, t, &dir);
    let gets = c.proxy.traffic.count("GET", "") - gets0;
    let down = c.proxy.traffic.bytes() - bytes0;
    assert!(
        gets <= 2,
        "{gets} GETs: {:?}",
        c.proxy.traffic.log.lock().unwrap()
    );
    assert_eq!(thaws(&c), 1);
    assert!(down <= 300_000 + (64 << 10), "{down} bytes downloaded");
    assert!(
        r["bytes_downloaded"].as_u64().unwrap() <= 300_000 + (64 << 10),
        "{r}"
    );
    assert_eq!(r["images"][0]["ranges"].as_array().unwrap().len(), 1, "{r}");
}

/// Awkward names: not UTF-8, CJK, emoji, a 200-byte name, deep folders.
fn awkward_library(env: &Env) -> Vec<(PathBuf, Vec<u8>, i64)> {
    let long = format!("long/{}.jpg", "x".repeat(196));
    let names: Vec<Vec<u8>> = vec![
        b"caf\xe9/\xff\xfe photo.jpg".to_vec(),
        "東京/写真 2020.jpg".as_bytes().to_vec(),
        "emoji/🎉🎂 birthday.jpg".as_bytes().to_vec(),
        long.into_bytes(),
        b"a/b/c/d/e/f/g/h/i/j/k/l/m/deep.jpg".to_vec(),
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let content = bytes(50 + i as u32, 30_000 + i * 1000);
            let t = (1_500_000_000 + i as i64 * 3600) * NS + 987_654_321;
            (put(env, n, &content, t), content, t)
        })
        .collect()
}

/// Nothing left on this machine but the profile.
fn lose_everything(env: &Env) {
    std::fs::remove_dir_all(env.db()).unwrap();
    std::fs::remove_dir_all(env.lib()).unwrap();
}

#[test]
fn recovery_from_nothing_by_snapshot_then_by_catalogs_alone() {
    let env = Env::new();
    let Some(c) = cloud(&env, forward(), "") else {
        return;
    };
    let mut files = awkward_library(&env);
    env.json(&["--config", &c.cfg, "backup"], 0);
    env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    // A second version of one file goes into a second image.
    let v2 = bytes(99, 41_000);
    let t2 = files[1].2 + 86_400 * NS;
    let v1 = std::mem::replace(
        &mut files[1],
        (put(&env, "東京/写真 2020.jpg".as_bytes(), &v2, t2), v2, t2),
    );
    env.json(&["--config", &c.cfg, "backup"], 0);
    env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    // One more, only staged (the snapshot knows it; no catalog does).
    let late = bytes(77, 12_345);
    let tl = 1_700_000_000 * NS + 1;
    let late_file = (put(&env, "late/новый.jpg".as_bytes(), &late, tl), late, tl);
    env.json(&["--config", &c.cfg, "backup"], 0);
    lose_everything(&env);

    let before = c.proxy.traffic.log.lock().unwrap().len();
    let r = env.json(&["--config", &c.cfg, "recover", "--site", "cloud"], 0);
    assert_eq!(r["source"], "snapshot", "{r}");
    assert_eq!(r["files"], 6, "{r}");
    assert_eq!(r["versions"], 7, "{r}");
    assert_eq!(r["images"], 2, "{r}");
    // Never a thaw, never a GET of an image.
    let sent: Vec<String> = c.proxy.traffic.log.lock().unwrap()[before..].to_vec();
    assert!(!sent.iter().any(|l| l.starts_with("POST ")), "{sent:?}");
    assert!(
        !sent
            .iter()
            .any(|l| l.starts_with("GET ") && l.contains(".iso") && !l.contains(".catalog")),
        "{sent:?}"
    );
    // Recovering twice into the same manifest is refused.
    let out = env
        .cmd()
        .args(["--config", &c.cfg, "recover", "--site", "cloud"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("already holds files"),
        "{}",
        stderr(&out)
    );
    // status and list work as on the original machine.
    env.json(&["--config", &c.cfg, "status"], 0);
    let l = env.json_lines(&["--config", &c.cfg, "list", "files"], 0);
    assert_eq!(l.as_array().unwrap().len(), 6, "{l}");

    let dir = env.path().join("back");
    let d = dir.to_str().unwrap();
    restore_json(&env, &c.cfg, &["--to", d], 7);
    assert_eq!(thaws(&c), 2, "one RestoreObject per image");
    let r = restore_json(&env, &c.cfg, &["--to", d], 0);
    assert_eq!(r["restored"], 5, "{r}");
    for (p, content, mtime) in files.iter().chain([&late_file]) {
        same(p, content, *mtime, &dir);
    }
    let old = env.path().join("old");
    restore_json(
        &env,
        &c.cfg,
        &["東京/*", "--version", "1", "--to", old.to_str().unwrap()],
        0,
    );
    same(&v1.0, &v1.1, v1.2, &old);

    // Again with the stage wiped: only the archive's catalogs are left.
    std::fs::remove_dir_all(env.db()).unwrap();
    let wiped = cloud(&env, forward(), "-wiped").unwrap();
    let wiped = Cloud {
        proxy: c.proxy,
        ..wiped
    };
    let r = env.json(&["--config", &wiped.cfg, "recover", "--site", "cloud"], 0);
    assert_eq!(r["source"], "catalogs", "{r}");
    assert_eq!(r["files"], 5, "{r}");
    assert_eq!(r["versions"], 6, "{r}");
    assert_eq!(r["inferred_roots"], false, "{r}");
    assert!(r["unaccounted"].as_array().unwrap().is_empty(), "{r}");
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("one path per content"),
        "{r}"
    );
    let dir = env.path().join("from-catalogs");
    let d = dir.to_str().unwrap();
    // The images are still thawed on moto: no new RestoreObject.
    let r = restore_json(&env, &wiped.cfg, &["--to", d], 0);
    assert_eq!(r["restored"], 5, "{r}");
    assert_eq!(thaws(&wiped), 2);
    for (p, content, mtime) in &files {
        let got = landed(&dir, p);
        assert_eq!(&std::fs::read(&got).unwrap(), content, "{}", got.display());
        // A catalog, like the image, holds whole seconds.
        assert_eq!(std::fs::metadata(&got).unwrap().mtime(), mtime / NS);
    }
    // The recovered manifest continues the one that marked the archive: syncing is not
    // refused as another machine's.
    env.json(&["--config", &wiped.cfg, "sync", "--site", "cloud"], 0);
    let old = env.path().join("old2");
    restore_json(
        &env,
        &wiped.cfg,
        &["東京/*", "--version", "1", "--to", old.to_str().unwrap()],
        0,
    );
    assert_eq!(std::fs::read(landed(&old, &v1.0)).unwrap(), v1.1);
}

#[test]
fn a_hostile_catalog_or_a_link_in_the_folder_writes_nothing_outside_it() {
    let env = Env::new();
    let cfg = local_site(&env);
    let good = put(&env, b"good.jpg", &bytes(1, 5000), 1_600_000_000 * NS);
    env.json(&["--config", &cfg, "backup"], 0);
    env.json(
        &["--config", &cfg, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    let archive = env.path().join("nas-archive/archive");
    let catalog = walk(&archive)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".catalog.json"))
        .unwrap();
    let image = PathBuf::from(catalog.to_string_lossy().trim_end_matches(".catalog.json"));
    // A second image whose catalog names files outside any folder, and one whose bytes
    // are not what its catalog says.
    let mut cat: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&catalog).unwrap()).unwrap();
    let real = cat["files"][0].clone();
    let mut files = Vec::new();
    for evil in ["../../escape.jpg", "/etc/abs.jpg", "ok/../../up.jpg", ""] {
        let mut f = real.clone();
        f["path"] = evil.into();
        f["content"] = "ab".repeat(16).into();
        files.push(f);
    }
    let mut liar = real.clone();
    liar["path"] = format!(
        "{}/liar.jpg",
        env.lib().display().to_string().trim_start_matches('/')
    )
    .into();
    liar["sha256"] = "00".repeat(32).into();
    liar["content"] = "cd".repeat(16).into();
    files.push(liar);
    cat["files"] = files.into();
    std::fs::copy(&image, archive.join("nas-2001-01-01--2001-01-02.iso")).unwrap();
    std::fs::write(
        archive.join("nas-2001-01-01--2001-01-02.iso.catalog.json"),
        serde_json::to_vec(&cat).unwrap(),
    )
    .unwrap();
    // Nothing but the archive is left.
    std::fs::remove_dir_all(env.path().join("nas-stage")).unwrap();
    std::fs::remove_dir_all(env.db()).unwrap();
    let r = env.json(&["--config", &cfg, "recover", "--site", "nas"], 3);
    assert_eq!(r["source"], "catalogs", "{r}");
    let refused = r["unaccounted"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u.as_str().unwrap().contains("not a plain relative path"))
        .count();
    assert_eq!(refused, 4, "{r}");
    assert_eq!(r["files"], 2, "{r}");

    let jail = env.path().join("jail");
    let dir = jail.join("inside");
    let r = restore_json(&env, &cfg, &["--to", dir.to_str().unwrap()], 6);
    assert_eq!(r["restored"], 1, "{r}");
    assert_eq!(r["failed"][0]["kind"], "integrity", "{r}");
    assert!(!landed(&dir, &env.lib().join("liar.jpg")).exists());
    same(&good, &bytes(1, 5000), 1_600_000_000 * NS, &dir);
    assert!(walk(&jail).iter().all(|p| p.starts_with(&dir)));
    no_temporaries(&dir);

    // A link inside the folder that points out of it is never followed.
    let outside = env.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let dir2 = env.path().join("linked");
    let lib = env.lib();
    let first = lib.components().nth(1).unwrap();
    std::fs::create_dir_all(&dir2).unwrap();
    std::os::unix::fs::symlink(&outside, dir2.join(first.as_os_str())).unwrap();
    let r = restore_json(&env, &cfg, &["good.jpg", "--to", dir2.to_str().unwrap()], 1);
    assert!(
        r["failed"][0]["message"].as_str().unwrap().contains("link"),
        "{r}"
    );
    assert!(walk(&outside).is_empty(), "{:?}", walk(&outside));
}

#[test]
fn kill_9_during_a_restore_then_the_rerun_fetches_only_what_is_missing() {
    let env = Env::new();
    // The fourth image GET after the thaw hangs while `stall` is set.
    let stall = Arc::new(AtomicBool::new(true));
    let gets = Arc::new(AtomicUsize::new(0));
    let (st, g) = (stall.clone(), gets.clone());
    let rule: Arc<Rule> = Arc::new(move |s| {
        let image = s.target.contains(".iso") && !s.target.contains(".catalog.json");
        if image
            && s.method == "GET"
            && g.fetch_add(1, Ordering::SeqCst) == 3
            && st.load(Ordering::SeqCst)
        {
            return Action::Stall;
        }
        Action::Forward
    });
    let Some(c) = cloud(&env, rule, "") else {
        return;
    };
    let mut files = Vec::new();
    for i in 0..16u32 {
        let content = bytes(200 + i, 1_500_000);
        let t = (1_600_000_000 + i as i64) * NS + 3;
        files.push((
            put(&env, format!("k/{i:02}.mov").as_bytes(), &content, t),
            content,
            t,
        ));
    }
    env.json(&["--config", &c.cfg, "backup"], 0);
    env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    let dir = env.path().join("back");
    let d = dir.to_str().unwrap();
    // Every other file: eight ranges, too far apart to merge.
    let even = "k/*[02468].mov";
    restore_json(&env, &c.cfg, &[even, "--to", d], 7);
    let mut child = env
        .std_cmd()
        .args(["--config", &c.cfg, "restore", even, "--to", d, "--wait"])
        .env("LOMOB_THAW_POLL_SECONDS", "0.05")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while gets.load(Ordering::SeqCst) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never reached the fourth GET"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    stall.store(false, Ordering::SeqCst);
    let done = walk(&dir)
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".mov"))
        .count();
    assert!(done < 8, "{done}");
    let before = image_gets(&c);
    let r = restore_json(&env, &c.cfg, &[even, "--to", d], 0);
    assert_eq!(r["already_there"].as_u64().unwrap() as usize, done, "{r}");
    assert_eq!(r["restored"].as_u64().unwrap() as usize, 8 - done, "{r}");
    assert_eq!(
        image_gets(&c) - before,
        8 - done,
        "only the missing files are fetched"
    );
    assert_eq!(thaws(&c), 1, "no second RestoreObject");
    for (p, content, mtime) in files.iter().step_by(2) {
        same(p, content, *mtime, &dir);
    }
    no_temporaries(&dir);
}

#[test]
fn recover_all_takes_the_newest_snapshot_across_sites() {
    let env = Env::new();
    let root = env.path().display().to_string();
    let cfg = env.config(&format!(
        r#"
[library]
roots = ["{root}/lib"]

[sites.home]
stage = {{ kind = "fs", root = "{root}/home-stage" }}
archive = {{ kind = "fs", root = "{root}/home-archive" }}

[sites.parents]
stage = {{ kind = "fs", root = "{root}/parents-stage" }}
archive = {{ kind = "fs", root = "{root}/parents-archive" }}
"#
    ));
    small_library(&env);
    env.json(&["--config", &cfg, "backup"], 0);
    // Only the parents' site has seen the newest file.
    put(&env, b"new.jpg", &bytes(3, 1000), 1_700_000_000 * NS);
    let lib = env.lib();
    env.json(&["--config", &cfg, "scan", lib.to_str().unwrap()], 0);
    env.json(&["--config", &cfg, "sync", "--site", "parents"], 0);
    lose_everything(&env);
    let r = env.json(&["--config", &cfg, "recover", "--all"], 0);
    assert!(
        r["snapshot"].as_str().unwrap().starts_with("site parents"),
        "{r}"
    );
    assert_eq!(r["files"], 7, "{r}");
    let dir = env.path().join("back");
    let r = restore_json(&env, &cfg, &["--to", dir.to_str().unwrap()], 0);
    assert_eq!(r["restored"], 7, "{r}");
    // A corrupt newest snapshot is skipped for the next one, and said so.
    std::fs::remove_dir_all(env.db()).unwrap();
    let snaps: Vec<PathBuf> = walk(&env.path().join("parents-stage"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("manifest-"))
        .collect();
    let newest = snaps.iter().max().unwrap();
    let text = std::fs::read_to_string(newest).unwrap();
    std::fs::write(newest, &text[..text.len() / 2]).unwrap();
    let r = env.json(&["--config", &cfg, "recover", "--all"], 0);
    assert_eq!(r["skipped_snapshots"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["source"], "snapshot", "{r}");
}

#[test]
fn long_ranges_are_streamed_in_one_get_with_every_byte_checked() {
    let env = Env::new();
    let Some(c) = cloud(&env, forward(), "") else {
        return;
    };
    let mut files = Vec::new();
    for i in 0..12u32 {
        let content = bytes(300 + i, 400_000 + i as usize * 7);
        let t = (1_600_000_000 + i as i64) * NS + 11;
        files.push((
            put(&env, format!("s/{i:02}.mov").as_bytes(), &content, t),
            content,
            t,
        ));
    }
    env.json(&["--config", &c.cfg, "backup"], 0);
    env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    let dir = env.path().join("back");
    let d = dir.to_str().unwrap();
    restore_json(&env, &c.cfg, &["--to", d], 7);
    let gets = image_gets(&c);
    let out = env
        .cmd()
        .env("LOMOB_TEST_STREAM_OVER", "1")
        .args(["--config", &c.cfg, "restore", "--to", d, "--json"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["restored"], 12, "{r}");
    assert_eq!(
        image_gets(&c) - gets,
        1,
        "one streamed GET for the whole span"
    );
    for (p, content, mtime) in &files {
        same(p, content, *mtime, &dir);
    }
    no_temporaries(&dir);
    // A local-disk archive streams the same way.
    let env = Env::new();
    let cfg = local_site(&env);
    let lib = small_library(&env);
    env.json(&["--config", &cfg, "backup"], 0);
    env.json(
        &["--config", &cfg, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    let dir = env.path().join("back");
    let out = env
        .cmd()
        .env("LOMOB_TEST_STREAM_OVER", "1")
        .args([
            "--config",
            &cfg,
            "restore",
            "--to",
            dir.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    for (p, content, mtime) in &lib.files {
        same(p, content, *mtime, &dir);
    }
}

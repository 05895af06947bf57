//! End-to-end tests of `lomob restore` and `lomob recover`: round trips from a local-disk
//! site (stage and image ranges, versions, dates, deleted files, files already there),
//! Deep Archive thaws on moto (one RestoreObject per image, the waiting and rerun paths
//! through a proxy that keeps a thaw "in progress"), one photo out of a large image,
//! recovery from nothing with awkward names, hostile catalogs and snapshots, and kill -9.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::support::{age_manifest, assert_code, stderr, Env};

const NS: i64 = 1_000_000_000;

/// Writes `content` at `rel` under the library with an mtime that has nanoseconds.
fn put(env: &Env, rel: &[u8], content: &[u8], mtime_ns: i64) -> PathBuf {
    let p = env.lib().join(std::ffi::OsStr::from_bytes(rel));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(mtime_ns as u64))
        .unwrap();
    p
}

fn bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn config(env: &Env, text: &str) -> String {
    let p = env.path().join("config.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn local_site(env: &Env) -> String {
    let root = env.path().display().to_string();
    config(
        env,
        &format!(
            r#"
[library]
roots = ["{root}/lib"]

[sites.nas]
pack-threshold = "1GB"
stage = {{ kind = "fs", root = "{root}/nas-stage" }}
archive = {{ kind = "fs", root = "{root}/nas-archive" }}
"#
        ),
    )
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

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
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
    let r = env.json(&["--config", &cfg, "restore", "--to", d], 0);
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
    let r = env.json(&["--config", &cfg, "restore", "--to", d], 0);
    assert_eq!(r["restored"], 0, "{r}");
    assert_eq!(r["already_there"], 7, "{r}");
    assert_eq!(r["bytes_downloaded"], 0, "{r}");

    // A different file in place is left alone and reported (exit 3), unless --overwrite.
    let b = landed(&dir, &lib.files[2].0);
    std::fs::write(&b, b"edited since").unwrap();
    let r = env.json(&["--config", &cfg, "restore", "--to", d], 3);
    assert_eq!(r["left_alone"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(std::fs::read(&b).unwrap(), b"edited since");
    let r = env.json(&["--config", &cfg, "restore", "--to", d, "--overwrite"], 0);
    assert_eq!(r["restored"], 1, "{r}");
    same(&lib.files[2].0, &lib.files[2].1, lib.files[2].2, &dir);

    // Paths relative to a root, and globs over the whole path.
    let one = env.path().join("one");
    let r = env.json(
        &[
            "--config",
            &cfg,
            "restore",
            "2021/b.jpg",
            "--to",
            one.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(r["restored"], 1, "{r}");
    let glob = env.path().join("glob");
    let pattern = format!("{}/**/*.jpg", env.lib().display());
    let r = env.json(
        &[
            "--config",
            &cfg,
            "restore",
            &pattern,
            "--to",
            glob.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(r["restored"], 5, "{r}");
    let r = env.json(
        &[
            "--config",
            &cfg,
            "restore",
            "nothing/*.png",
            "--to",
            glob.to_str().unwrap(),
        ],
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
    let r = env.json(
        &[
            "--config",
            &cfg,
            "restore",
            "2021/b.jpg",
            "--at",
            &at,
            "--to",
            old.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(r["restored"], 1, "{r}");
    same(&b.0, &b.1, b.2, &old);
    let new = env.path().join("new");
    env.json(
        &[
            "--config",
            &cfg,
            "restore",
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
    env.json(
        &[
            "--config",
            &cfg,
            "restore",
            "2021/b.jpg",
            "--version",
            "1",
            "--to",
            v1.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(std::fs::read(landed(&v1, &b.0)).unwrap(), b.1);

    // A deleted file only with --deleted; --at before the deletion brings it back too.
    let del = env.path().join("del");
    let r = env.json(
        &[
            "--config",
            &cfg,
            "restore",
            "2020/a.jpg",
            "--to",
            del.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(r["restored"], 0, "{r}");
    assert_eq!(r["deleted_left_out"], 1, "{r}");
    let r = env.json(
        &[
            "--config",
            &cfg,
            "restore",
            "2020/a.jpg",
            "--deleted",
            "--to",
            del.to_str().unwrap(),
        ],
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
    let r = env.json(
        &["--config", &cfg, "restore", "--to", dir.to_str().unwrap()],
        6,
    );
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
        let r = env.json(
            &["--config", &cfg, "restore", "--to", dir.to_str().unwrap()],
            3,
        );
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

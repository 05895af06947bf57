//! End-to-end tests of the foundation commands: scan, list, status, manifest export/import,
//! profiles. Each drives the real binary in its own temporary home.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use crate::support::{assert_code, export_body, set_mtime, stderr, stdout, Env};

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

#[test]
fn incremental_rescans_see_new_changed_deleted_renamed_and_unchanged() {
    let env = Env::new();
    env.write("2024/01/a.jpg", b"photo a");
    env.write("2024/01/b.jpg", b"photo b");
    let c = env.write("2024/02/c.mp4", b"video c");
    env.write("2024/02/d.jpg", b"photo d");

    let r = env.scan();
    assert_eq!(
        (n(&r, "new"), n(&r, "unchanged"), n(&r, "errors")),
        (4, 0, 0)
    );
    assert_eq!(n(&r, "files_hashed"), 4);

    // Nothing changed: nothing is read again.
    let r = env.scan();
    assert_eq!((n(&r, "new"), n(&r, "unchanged")), (0, 4));
    assert_eq!(n(&r, "files_hashed"), 0);

    // Change one, delete one, rename one, add one.
    std::fs::write(&c, b"video c, edited").unwrap();
    set_mtime(&c, 1_800_000_000);
    std::fs::remove_file(env.lib().join("2024/01/b.jpg")).unwrap();
    std::fs::rename(
        env.lib().join("2024/02/d.jpg"),
        env.lib().join("2024/02/d-renamed.jpg"),
    )
    .unwrap();
    env.write("2024/03/e.jpg", b"photo e");
    let r = env.scan();
    assert_eq!(n(&r, "new"), 2, "{r}"); // e.jpg and d-renamed.jpg
    assert_eq!(n(&r, "changed"), 1, "{r}");
    assert_eq!(n(&r, "deleted"), 2, "{r}"); // b.jpg and d.jpg
    assert_eq!(n(&r, "renamed"), 1, "{r}");
    assert_eq!(n(&r, "unchanged"), 1, "{r}");

    // Old versions and deleted files are kept.
    let files = env.json_lines(&["list", "files", "--deleted"], 0);
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 6);
    let c_row = files
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("c.mp4"))
        .unwrap();
    assert_eq!(c_row["versions"], 2);
    let deleted: Vec<_> = files
        .iter()
        .filter(|f| !f["deleted_at"].is_null())
        .collect();
    assert_eq!(deleted.len(), 2);
    let present = env.json_lines(&["list", "files"], 0);
    assert_eq!(present.as_array().unwrap().len(), 4);

    // A deleted file that comes back is present again, with no new version.
    env.write("2024/01/b.jpg", b"photo b");
    let r = env.scan();
    assert_eq!(n(&r, "deleted"), 0);
    let files = env.json_lines(&["list", "files", "--dir", "2024/01"], 0);
    assert_eq!(files.as_array().unwrap().len(), 2, "{files}");
}

#[test]
fn identical_content_at_two_paths_is_one_content() {
    let env = Env::new();
    env.write("a/x.jpg", b"same bytes");
    env.write("b/y.jpg", b"same bytes");
    env.write("b/z.jpg", b"other bytes");
    let r = env.scan();
    assert_eq!(n(&r, "duplicates"), 1);
    let s = env.json(&["status"], 0);
    assert_eq!(s["present"]["files"], 3);
    assert_eq!(s["contents"]["files"], 2);
    assert_eq!(s["contents"]["bytes"], 10 + 11);
}

#[test]
fn non_utf8_and_very_long_names_are_kept_exactly() {
    let env = Env::new();
    let raw = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.jpg");
    std::fs::write(env.lib().join(raw), b"latin1 name").unwrap();
    let long = format!("{}.jpg", "ä".repeat(125)); // 250 + 4 bytes
    assert!(long.len() > 250 && long.len() <= 255);
    env.write(&format!("deep/{long}"), b"long name");
    let r = env.scan();
    assert_eq!(n(&r, "new"), 2, "{r}");
    let r = env.scan();
    assert_eq!(n(&r, "unchanged"), 2, "raw names must match on rescan: {r}");

    // Shown lossily for people...
    let out = env.cmd().args(["list", "files"]).output().unwrap();
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("caf\u{fffd}-latin1.jpg"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains(&long));
    // ...but kept as raw bytes in the portable export.
    let export = env.path().join("m.jsonl");
    env.cmd()
        .args(["manifest", "export", export.to_str().unwrap()])
        .assert()
        .success();
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        text.contains(r#""path":{"b64":"Y2Fm6S1sYXRpbjEuanBn"}"#),
        "{text}"
    );
}

#[test]
fn ignore_lists_apply_and_can_be_replaced() {
    let env = Env::new();
    env.write("a.jpg", b"a");
    env.write(".DS_Store", b"junk");
    env.write("sub/Thumbs.db", b"junk");
    env.write(".git/config", b"junk");
    env.write("skipme/b.jpg", b"b");
    let r = env.scan();
    assert_eq!(
        n(&r, "new"),
        2,
        "defaults skip .DS_Store, Thumbs.db and .git: {r}"
    );

    let env2 = Env::new();
    for (p, c) in [
        ("a.jpg", "a"),
        (".DS_Store", "j"),
        ("skipme/b.jpg", "b"),
        (".git/c", "c"),
    ] {
        env2.write(p, c.as_bytes());
    }
    let lib = env2.lib();
    let r = env2.json(
        &[
            "scan",
            lib.to_str().unwrap(),
            "--if",
            "a.jpg",
            "--in",
            "skipme",
        ],
        0,
    );
    // Replaced lists: .DS_Store and .git are now taken, a.jpg and skipme/ are not.
    assert_eq!(n(&r, "new"), 2, "{r}");
    let files = env2.json_lines(&["list", "files"], 0);
    let paths: Vec<&str> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.ends_with("/.DS_Store")), "{paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("/.git/c")), "{paths:?}");
}

#[test]
fn symlinks_are_not_followed_and_loops_are_harmless() {
    let env = Env::new();
    env.write("real/a.jpg", b"a");
    std::os::unix::fs::symlink(env.lib(), env.lib().join("real/loop")).unwrap();
    std::os::unix::fs::symlink(env.lib().join("real/a.jpg"), env.lib().join("link.jpg")).unwrap();
    let r = env.scan();
    assert_eq!(n(&r, "new"), 1, "{r}");
}

/// Tests run as root, which reads everything; an unprivileged user provokes real read
/// errors honestly. `setpriv` (util-linux) drops to `nobody` for the scanning process.
fn run_unprivileged(env: &Env, args: &[&str]) -> std::process::Output {
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root {
        return env.cmd().args(args).output().unwrap();
    }
    // nobody must be able to reach the test folders and write the manifest.
    let mut p = env.path().to_path_buf();
    loop {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
        if !p.pop() {
            break;
        }
    }
    let home = env.path().join("home");
    std::fs::create_dir_all(home.join(".local/share")).unwrap();
    std::process::Command::new("chown")
        .args(["-R", "nobody", home.to_str().unwrap()])
        .status()
        .unwrap();
    let bin = assert_cmd::cargo::cargo_bin("lomob");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&bin)
        .args(args)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .current_dir(env.path());
    cmd.output().unwrap()
}

#[test]
fn unreadable_files_and_folders_are_reported_and_not_taken_as_deleted() {
    let env = Env::new();
    env.write("ok.jpg", b"fine");
    let secret = env.write("locked.jpg", b"no access");
    env.write("closed/inside.jpg", b"hidden");
    for p in [env.lib(), env.lib().join("closed")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["ok.jpg", "locked.jpg", "closed/inside.jpg"] {
        std::fs::set_permissions(env.lib().join(f), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let lib = env.lib();
    let lib = lib.to_str().unwrap();
    let out = run_unprivileged(&env, &["scan", lib, "--json"]);
    assert_code(&out, 0);

    // Now lock a file and a folder away from the scanning user.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(
        env.lib().join("closed"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::write(env.lib().join("ok.jpg"), b"fine, edited").unwrap();
    set_mtime(&env.lib().join("ok.jpg"), 1_800_000_000);
    std::fs::write(&secret, b"changed while locked").unwrap();
    set_mtime(&secret, 1_800_000_000);
    let out = run_unprivileged(&env, &["scan", lib]);
    std::fs::set_permissions(
        env.lib().join("closed"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_code(&out, 3);
    let err = stderr(&out);
    assert!(err.contains("locked.jpg"), "{err}");
    assert!(err.contains("closed"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(stdout(&out).contains("1 changed"), "{}", stdout(&out));
    assert!(stdout(&out).contains("2 errors"), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 deleted"), "{}", stdout(&out));

    // Back as root (or owner), the manifest still has all three, none deleted.
    let out = run_unprivileged(&env, &["list", "files", "--deleted", "--json"]);
    assert_code(&out, 0);
    let files = crate::support::json_lines(&out.stdout);
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| f["deleted_at"].is_null()), "{files:?}");
}

#[test]
fn a_missing_root_is_an_error_and_deletes_nothing() {
    let env = Env::new();
    env.write("a.jpg", b"a");
    env.scan();
    let moved = env.path().join("unmounted");
    std::fs::rename(env.lib(), &moved).unwrap();
    let lib = env.lib();
    let out = env
        .cmd()
        .args(["scan", lib.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("is the disk mounted?"),
        "{}",
        stderr(&out)
    );
    std::fs::rename(&moved, env.lib()).unwrap();
    let r = env.json(&["scan"], 0); // no DIR: the roots scanned before
    assert_eq!(n(&r, "unchanged"), 1, "{r}");
    assert_eq!(n(&r, "deleted"), 0, "{r}");
}

#[test]
fn a_db_path_that_is_not_a_manifest_is_refused() {
    let env = Env::new();
    env.write("photo.jpg", b"x");
    let lib = env.lib();
    let out = env
        .cmd()
        .args(["--db", lib.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("not a lomob manifest"),
        "{}",
        stderr(&out)
    );
    assert!(!lib.join("db").exists());
}

#[test]
fn nothing_to_scan_is_a_usage_error() {
    let env = Env::new();
    let out = env.cmd().arg("scan").output().unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("nothing to scan"), "{}", stderr(&out));
}

#[test]
fn a_second_process_on_the_same_manifest_is_refused_with_its_pid() {
    let env = Env::new();
    env.write("a.jpg", b"a");
    let _held = lomob::manifest::Manifest::open(&env.db()).unwrap();
    let lib = env.lib();
    let out = env
        .cmd()
        .args(["scan", lib.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 4);
    let err = stderr(&out);
    assert!(err.contains("in use"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
}

#[test]
fn export_then_import_round_trips_exactly() {
    let env = Env::new();
    env.write("2023/a.jpg", b"a");
    let b = env.write("2023/b.jpg", b"b");
    env.write("2024/c.jpg", b"a");
    env.scan();
    std::fs::write(&b, b"b2").unwrap();
    set_mtime(&b, 1_800_000_000);
    std::fs::remove_file(env.lib().join("2024/c.jpg")).unwrap();
    env.scan();

    let first = env.path().join("first.jsonl");
    let second = env.path().join("second.jsonl");
    let other_db = env.path().join("other.db");
    env.cmd()
        .args(["manifest", "export", first.to_str().unwrap()])
        .assert()
        .success();
    let imported = env.json(
        &[
            "--db",
            other_db.to_str().unwrap(),
            "manifest",
            "import",
            first.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(imported["files"], 3);
    assert_eq!(imported["runs"], 2);
    env.cmd()
        .args([
            "--db",
            other_db.to_str().unwrap(),
            "manifest",
            "export",
            second.to_str().unwrap(),
        ])
        .assert()
        .success();
    let a = std::fs::read_to_string(&first).unwrap();
    let b = std::fs::read_to_string(&second).unwrap();
    let body = |s: &str| s.lines().skip(1).map(String::from).collect::<Vec<_>>();
    assert_eq!(body(&a), body(&b));
    assert!(a
        .lines()
        .next()
        .unwrap()
        .contains(r#""format":"lomob-manifest""#));

    // Importing into a manifest that holds records is refused.
    let out = env
        .cmd()
        .args(["manifest", "import", first.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("already holds records"),
        "{}",
        stderr(&out)
    );

    // A truncated export is detected and nothing is imported.
    let cut = env.path().join("cut.jsonl");
    let lines: Vec<&str> = a.lines().collect();
    std::fs::write(&cut, lines[..lines.len() - 1].join("\n")).unwrap();
    let third = env.path().join("third.db");
    let out = env
        .cmd()
        .args([
            "--db",
            third.to_str().unwrap(),
            "manifest",
            "import",
            cut.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
}

#[test]
fn list_bigfiles_dirs_and_status() {
    let env = Env::new();
    env.write("2024/01/small.jpg", &[1u8; 1_000]);
    env.write("2024/01/big.mp4", &[2u8; 3_000_000]);
    env.write("2024/02/bigger.mp4", &[3u8; 5_000_000]);
    env.scan();
    let big = env.json_lines(&["list", "bigfiles", "-s", "2MB"], 0);
    let names: Vec<&str> = big
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names[0].ends_with("bigger.mp4") && names[1].ends_with("big.mp4"));
    let big = env.json_lines(&["list", "bigfiles", "--file-size", "4MiB"], 0);
    assert_eq!(big.as_array().unwrap().len(), 1);
    let out = env
        .cmd()
        .args(["list", "bigfiles", "-s", "2 parsecs"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("2 parsecs"));

    // The root and 2024 hold no files of their own but are listed.
    let dirs = env.json_lines(&["list", "dirs"], 0);
    let dirs = dirs.as_array().unwrap();
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    let jan = dirs
        .iter()
        .find(|d| d["path"].as_str().unwrap().ends_with("2024/01"))
        .unwrap();
    assert_eq!(jan["files"], 2);
    assert_eq!(jan["bytes"], 3_001_000);

    let s = env.json(&["status"], 0);
    assert_eq!(s["present"]["files"], 3);
    assert_eq!(s["present"]["bytes"], 8_001_000);
    assert_eq!(s["last_scan"]["ok"], true);
    let out = env.cmd().arg("status").output().unwrap();
    assert!(stdout(&out).contains("8.0 MB"), "{}", stdout(&out));
}

#[test]
fn bad_profiles_are_rejected_with_the_file_key_and_what_to_do() {
    let env = Env::new();
    let cases: &[(&str, &[&str])] = &[
        ("[library]\nrootz = [\"/x\"]\n", &["config.toml", "rootz", "library"]),
        ("[library]\nthreads = \"many\"\n", &["config.toml", "library.threads", "expected"]),
        (
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\niso-size = \"5 parsecs\"\n",
            &["sites.a.iso-size", "5 parsecs", "KB"],
        ),
        (
            "[sites.a]\nstage = { kind = \"ftp\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
            &["sites.a.stage", "ftp", "fs"],
        ),
        (
            "[sites.a]\nstage = { kind = \"s3\", bucket = \"b\", buckit = \"c\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
            &["sites.a.stage", "buckit"],
        ),
        (
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\n",
            &["sites.a", "archive"],
        ),
        (
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\nschedule = { sync = \"daily 25:00\" }\n",
            &["sites.a.schedule.sync", "daily 25:00"],
        ),
        (
            "[sites.a]\nstage = { kind = \"s3\", bucket = \"b\", endpoint = \"s3.example.com\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
            &["site \"a\"", "endpoint", "https://"],
        ),
        ("[library\nroots = 1\n", &["config.toml", "TOML"]),
    ];
    for (text, wants) in cases {
        let cfg = env.config(text);
        let out = env
            .cmd()
            .args(["--config", &cfg, "site", "list"])
            .output()
            .unwrap();
        assert_code(&out, 2);
        let err = stderr(&out);
        for w in *wants {
            assert!(err.contains(w), "error for\n{text}\nlacks {w:?}:\n{err}");
        }
    }
    let out = env
        .cmd()
        .args(["--config", "/no/such/file.toml", "status"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("/no/such/file.toml"));
}

#[test]
fn environment_overrides_apply_and_secrets_never_print() {
    let env = Env::new();
    let cfg = env.config(r#"
[sites.b2]
stage = { kind = "s3", bucket = "b", access-key-id = "AKIDINLINE", secret-access-key = "TOPSECRETVALUE" }
archive = { kind = "fs", root = "/a" }
"#,
    );
    let out = env
        .cmd()
        .args(["--config", &cfg, "site", "list", "--json"])
        .env("LOMOB_SITES__B2__PACK_THRESHOLD", "3GB")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(!text.contains("TOPSECRETVALUE"), "{text}");
    assert!(!text.contains("AKIDINLINE"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v[0]["config"]["pack-threshold"], "3.0GB");
    let out = env
        .cmd()
        .args(["--config", &cfg, "site", "list"])
        .output()
        .unwrap();
    assert!(!stdout(&out).contains("TOPSECRETVALUE"));
}

#[test]
fn every_example_profile_parses_and_names_its_site() {
    let env = Env::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        let v = env.json(&["--config", p.to_str().unwrap(), "site", "list"], 0);
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![stem.as_str()], "{}", p.display());
        seen.push(stem);
    }
    seen.sort();
    assert_eq!(
        seen,
        ["gdrive", "glacier", "local", "onedrive", "parents", "s3"]
    );
}

#[test]
fn the_embedded_default_needs_no_setup() {
    let env = Env::new();
    let v = env.json(&["site", "list"], 0);
    assert_eq!(v[0]["name"], "local");
    let root = v[0]["config"]["stage"]["root"].as_str().unwrap();
    assert!(
        root.starts_with(env.path().join("home").to_str().unwrap()),
        "{root}"
    );
}

#[test]
fn help_is_complete() {
    let env = Env::new();
    for args in [
        vec!["--help"],
        vec!["scan", "--help"],
        vec!["list", "bigfiles", "--help"],
        vec!["manifest", "--help"],
    ] {
        let out = env.cmd().args(&args).output().unwrap();
        assert_code(&out, 0);
    }
    let out = env.cmd().args(["scan", "--help"]).output().unwrap();
    let help = stdout(&out);
    for w in [
        "--ignore-files",
        "--if",
        "--ignore-dirs",
        "--in",
        "--threads",
        "--db",
        "--log-level",
    ] {
        assert!(help.contains(w), "scan --help lacks {w}");
    }
    let out = env.cmd().arg("--help").output().unwrap();
    assert!(stdout(&out).contains("Exit codes"));
}

/// A manifest written by lomob before schema 4 (one sled value per record, no
/// compression; made by `tests/fixtures/make-schema3.sh` with 304f808) is upgraded at its
/// first open: its export is line for line the one the old version made, the totals agree
/// with a recount, and neither the copy kept during the upgrade nor the old database is
/// left behind.
#[test]
fn a_schema_3_manifest_is_upgraded_in_place_losing_nothing() {
    let env = Env::new();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let untar = std::process::Command::new("tar")
        .arg("xzf")
        .arg(fixtures.join("manifest-schema3.tar.gz"))
        .arg("-C")
        .arg(env.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let db = env.path().join("manifest");
    let db = db.to_str().unwrap();
    let conf = || std::fs::read(env.path().join("manifest/db/conf")).unwrap();
    assert!(String::from_utf8_lossy(&conf()).contains("use_compression: false"));

    let export = env.path().join("upgraded.jsonl");
    env.cmd()
        .args(["--db", db, "manifest", "export", export.to_str().unwrap()])
        .assert()
        .success();
    let (before, after) = (
        export_body(&fixtures.join("manifest-schema3.jsonl")),
        export_body(&export),
    );
    for kind in ["file", "content", "staged", "archived", "placement", "iso"] {
        let tag = format!("{{\"{kind}\":");
        assert!(before.iter().any(|l| l.starts_with(&tag)), "no {kind} line");
    }
    assert_eq!(before, after);

    let v = env.json(&["--db", db, "status", "--recount"], 0);
    assert_eq!(v["recount"]["drift"], serde_json::json!([]), "{v}");
    assert!(v["present"]["files"].as_u64().unwrap() > 40, "{v}");
    for left in ["db-before-upgrade", "db.old", "db.compact"] {
        assert!(!env.path().join("manifest").join(left).exists(), "{left}");
    }
    assert!(String::from_utf8_lossy(&conf()).contains("use_compression: true"));
    // A second open finds nothing more to do and changes nothing.
    env.cmd()
        .args(["--db", db, "manifest", "export", export.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(before, export_body(&export));
}

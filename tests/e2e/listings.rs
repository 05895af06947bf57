//! The listings the original tool's users know: `list dirs` as a dated tree (and `-t` as a
//! table) including folders without files of their own, `iso dump` of our images and
//! others', `list files --state`, and completions and the man page. The tree has the shape
//! of a real photo library: deep nesting, empty intermediate and leaf folders, a folder
//! name that is not UTF-8.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::support::{set_mtime, stdout, Env};

const DAY: i64 = 86_400;
/// 2021-06-15 12:00:00 UTC.
const T0: i64 = 1_623_758_400;

fn library(env: &Env) {
    let lib = env.lib();
    let files: [(&[u8], usize, i64); 6] = [
        (b"2019/2019-05 Trip/IMG_0001.JPG", 1_500, T0),
        (b"2019/2019-05 Trip/IMG_0001.MOV", 2_000_000, T0 + DAY),
        (b"Family/Kids/Birthday/2021/cake.jpg", 40_000, T0 + 10 * DAY),
        (
            b"Family/Kids/Birthday/2021/candles.jpg",
            50_000,
            T0 + 11 * DAY,
        ),
        (b"caf\xe9 (latin-1)/photo.jpg", 7, T0 + 100 * DAY),
        (b"top.jpg", 3, T0 + 200 * DAY),
    ];
    for (rel, size, t) in files {
        let p = lib.join(OsStr::from_bytes(rel));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![rel.len() as u8; size]).unwrap();
        set_mtime(&p, t);
    }
    std::fs::create_dir_all(lib.join("2020/empty album")).unwrap();
    // Folder dates last, deepest first (adding an entry changes a folder's date).
    let dirs: [(&[u8], i64); 10] = [
        (b"2019/2019-05 Trip", T0 + 2 * DAY),
        (b"2019", T0 + 3 * DAY),
        (b"2020/empty album", T0 + 4 * DAY),
        (b"2020", T0 + 5 * DAY),
        (b"Family/Kids/Birthday/2021", T0 + 9 * DAY),
        (b"Family/Kids/Birthday", T0 + 9 * DAY),
        (b"Family/Kids", T0 + 9 * DAY),
        (b"Family", T0 + 9 * DAY),
        (b"caf\xe9 (latin-1)", T0 + 99 * DAY),
        (b"", T0 + 150 * DAY),
    ];
    for (rel, t) in dirs {
        set_mtime(&lib.join(OsStr::from_bytes(rel)), t);
    }
}

fn run(env: &Env, args: &[&str]) -> String {
    let out = env.cmd().args(args).env("TZ", "UTC").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let lib = std::fs::canonicalize(env.lib()).unwrap();
    stdout(&out).replace(lib.to_str().unwrap(), "[LIB]")
}

#[test]
fn list_dirs_draws_a_dated_tree_and_a_table_with_every_folder() {
    let env = Env::new();
    library(&env);
    env.scan();
    insta::assert_snapshot!("list_dirs_tree", run(&env, &["list", "dirs"]));
    insta::assert_snapshot!("list_dirs_table", run(&env, &["list", "dirs", "-t"]));
    let rows = env.json_lines(&["list", "dirs"], 0);
    let rows = rows.as_array().unwrap();
    // The root, 2019 and its trip, 2020 and its empty album, Family and three below, the
    // non-UTF-8 folder: 10, of which 4 hold files.
    assert_eq!(rows.len(), 10, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r["files"] != 0).count(), 4);

    // A folder deleted is gone from the next listing; one made by the watcher-less scan too.
    std::fs::remove_dir(env.lib().join("2020/empty album")).unwrap();
    std::fs::create_dir(env.lib().join("2020/new album")).unwrap();
    env.scan();
    let tree = run(&env, &["list", "dirs"]);
    assert!(
        tree.contains("new album") && !tree.contains("empty album"),
        "{tree}"
    );
}

#[test]
fn iso_dump_shows_an_image_tree_from_the_file_or_the_manifest() {
    let env = Env::new();
    library(&env);
    env.scan();
    let out = env
        .cmd()
        .args(["iso", "create", "-s", "1GB", "--out", "isos"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list = env.json(&["iso", "list"], 0);
    let name = list[0]["name"].as_str().unwrap().to_string();
    let file = env.path().join("isos").join(&name);
    // The image holds absolute paths: the test's temporary folder is one level of them.
    let tmp = env
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let from_file = run(&env, &["iso", "dump", file.to_str().unwrap()])
        .replace(file.to_str().unwrap(), "[IMAGE]")
        .replace(&tmp, "[TMP]");
    insta::assert_snapshot!("iso_dump", from_file);
    // Without its local copy, the manifest gives the same entries but the catalog (nothing
    // is downloaded).
    std::fs::remove_file(&file).unwrap();
    let from_manifest = run(&env, &["iso", "dump", &name]).replace(&tmp, "[TMP]");
    assert!(from_manifest.contains("(from the manifest)"));
    let entries = |s: &str| -> std::collections::BTreeSet<String> {
        s.lines()
            .skip(1)
            .filter(|l| l.contains('['))
            .map(|l| l.trim_start_matches(|c| "│├└─ ".contains(c)).to_string())
            .filter(|l| !l.contains("LOMOB") && !l.contains("CATALOG.JSON"))
            .collect()
    };
    assert_eq!(entries(&from_manifest), entries(&from_file));

    // Any ISO 9660 image, here one xorriso wrote.
    if std::process::Command::new("xorriso")
        .arg("-version")
        .output()
        .is_ok()
    {
        let x = env.path().join("x.iso");
        let st = std::process::Command::new("xorriso")
            .args(["-as", "mkisofs", "-R", "-o"])
            .arg(&x)
            .arg(env.lib().join("Family"))
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        let d = run(&env, &["iso", "dump", x.to_str().unwrap()]);
        assert!(d.contains("└── [          90 KB]  Kids"), "{d}");
        assert!(d.contains("candles.jpg"), "{d}");
    }
    let out = env
        .cmd()
        .args(["iso", "dump", "nope.iso"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn list_files_by_state_and_site() {
    let env = Env::new();
    library(&env);
    env.scan();
    let paths = |args: &[&str]| -> usize { env.json_lines(args, 0).as_array().map_or(0, Vec::len) };
    assert_eq!(paths(&["list", "files", "--state", "unsafe"]), 6);
    assert_eq!(paths(&["list", "files", "--state", "staged"]), 0);
    env.json(&["sync", "--site", "local"], 0);
    assert_eq!(paths(&["list", "files", "--state", "unsafe"]), 0);
    assert_eq!(
        paths(&["list", "files", "--state", "staged", "--site", "local"]),
        6
    );
    assert_eq!(paths(&["list", "files", "--state", "archived"]), 0);
    let rows = env.json_lines(&["list", "files"], 0);
    assert_eq!(rows[0]["sites"][0]["site"], "local", "{rows}");
    assert_eq!(rows[0]["sites"][0]["copy"], "staged", "{rows}");
    let text = run(&env, &["list", "files"]);
    assert!(text.contains("local (staged)"), "{text}");
    std::fs::remove_file(env.lib().join("top.jpg")).unwrap();
    env.scan();
    assert_eq!(paths(&["list", "files", "--state", "deleted"]), 1);
    assert_eq!(paths(&["list", "files", "--state", "present"]), 5);
    let out = env
        .cmd()
        .args(["list", "files", "--state", "staged", "--site", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn completions_and_man_page_come_from_the_same_definitions() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let s = run(&env, &["completions", shell]);
        assert!(
            s.contains("restore") && s.contains("daemon"),
            "{shell}: {s}"
        );
    }
    let man = run(&env, &["man"]);
    assert!(man.contains(".TH lomob 1"), "{man}");
    assert!(man.contains("restore"), "{man}");
}

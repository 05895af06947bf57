//! End-to-end tests of `lomob iso`: packing scanned files into images, listing, verifying,
//! reading and extracting them, through the real binary.

use crate::support::{assert_code, set_mtime, stderr, Env};

fn sha(p: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn library(env: &Env) {
    for (i, name) in [
        "照片 1.jpg",
        "🎉 party.jpg",
        "café.jpg",
        "a;b.c.d",
        "plain.jpg",
    ]
    .iter()
    .enumerate()
    {
        let data: Vec<u8> = (0..400_000u32).map(|x| (x * 31 + i as u32) as u8).collect();
        let p = env.write(&format!("2023/0{}/{name}", i + 1), &data);
        set_mtime(&p, 1_680_000_000 + i as i64 * 86_400 * 30);
    }
    let p = env.write("2024/01/empty.jpg", b"");
    set_mtime(&p, 1_704_100_000);
}

#[test]
fn create_list_verify_ls_and_extract() {
    let env = Env::new();
    library(&env);
    env.scan();
    let out_dir = env.path().join("isos");
    let made = env.json(
        &[
            "iso",
            "create",
            "-s",
            "2MB",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        0,
    );
    let images = made["images"].as_array().unwrap();
    assert!(
        images.len() >= 2,
        "2MB images must split 2 MB of files: {made}"
    );
    let names: Vec<&str> = images.iter().map(|i| i["name"].as_str().unwrap()).collect();
    // Oldest first, named by the dates of their files, unique.
    assert!(names[0].starts_with("2023-03-28--"), "{names:?}");
    let mut uniq = names.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), names.len());
    let files: u64 = images.iter().map(|i| i["files"].as_u64().unwrap()).sum();
    assert_eq!(files, 6);
    for i in images {
        assert!(i["size"].as_u64().unwrap() <= 2_000_000, "{i}");
    }

    // Everything is packed: a second run has nothing to do.
    let again = env.json(&["iso", "create", "--out", out_dir.to_str().unwrap()], 0);
    assert_eq!(again["images"].as_array().unwrap().len(), 0);

    let list = env.json(&["iso", "list"], 0);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), images.len());
    assert_eq!(list[0]["status"], "Created, not uploaded");
    assert_eq!(list[0]["sha256"], images[0]["sha256"]);
    let out = env.cmd().args(["iso", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for h in [
        "ID",
        "NAME",
        "SIZE",
        "STATUS",
        "REGION",
        "BUCKET",
        "FILES COUNT",
        "CREATE TIME",
        "HASH",
    ] {
        assert!(text.contains(h), "{text}");
    }

    // Verify by name and by file.
    for target in [
        names[0].to_string(),
        out_dir.join(names[1]).display().to_string(),
    ] {
        let v = env.json(&["iso", "verify", &target], 0);
        assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
        assert_eq!(v["image_sha256_matches_manifest"], true);
    }

    // ls shows full UTF-8 names; extract gives byte-identical files.
    let mut all = Vec::new();
    for n in &names {
        let ls = env.json(&["iso", "ls", out_dir.join(n).to_str().unwrap()], 0);
        all.extend(
            ls.as_array()
                .unwrap()
                .iter()
                .filter(|e| e["dir"] == false)
                .map(|e| e["path"].as_str().unwrap().to_string()),
        );
        let to = env.path().join("restored");
        env.cmd()
            .args([
                "iso",
                "extract",
                out_dir.join(n).to_str().unwrap(),
                "--to",
                to.to_str().unwrap(),
            ])
            .assert()
            .success();
    }
    assert!(
        all.iter().any(|p| p.ends_with("2023/01/照片 1.jpg")),
        "{all:?}"
    );
    assert!(all.iter().any(|p| p.ends_with("🎉 party.jpg")), "{all:?}");
    let lib = env.lib();
    let restored = env
        .path()
        .join("restored")
        .join(lib.strip_prefix("/").unwrap());
    for f in [
        "2023/01/照片 1.jpg",
        "2023/02/🎉 party.jpg",
        "2023/04/a;b.c.d",
        "2024/01/empty.jpg",
    ] {
        assert_eq!(sha(&restored.join(f)), sha(&lib.join(f)), "{f}");
    }

    // Images and placements survive an export/import round trip.
    let first = env.path().join("first.jsonl");
    let second = env.path().join("second.jsonl");
    let other = env.path().join("other.db");
    env.cmd()
        .args(["manifest", "export", first.to_str().unwrap()])
        .assert()
        .success();
    env.cmd()
        .args([
            "--db",
            other.to_str().unwrap(),
            "manifest",
            "import",
            first.to_str().unwrap(),
        ])
        .assert()
        .success();
    env.cmd()
        .args([
            "--db",
            other.to_str().unwrap(),
            "manifest",
            "export",
            second.to_str().unwrap(),
        ])
        .assert()
        .success();
    let a = std::fs::read_to_string(&first).unwrap();
    let b = std::fs::read_to_string(&second).unwrap();
    assert!(
        a.contains(r#"{"iso":{"#) && a.contains(r#"{"placement":{"#),
        "{a}"
    );
    assert_eq!(
        a.lines().skip(1).collect::<Vec<_>>(),
        b.lines().skip(1).collect::<Vec<_>>()
    );
    let v = env.json(
        &["--db", other.to_str().unwrap(), "iso", "verify", names[0]],
        0,
    );
    assert_eq!(v["image_sha256_matches_manifest"], true);

    // An independent reader agrees, when installed (scripts/test.sh installs it).
    if let Ok(o) = std::process::Command::new("bsdtar")
        .arg("-tf")
        .arg(out_dir.join(names[0]))
        .output()
    {
        let listing = String::from_utf8_lossy(&o.stdout);
        assert!(listing.contains("LOMOB/CATALOG.JSON"), "{listing}");
    }
}

#[test]
fn a_damaged_image_fails_verification_naming_the_file() {
    let env = Env::new();
    library(&env);
    env.scan();
    let out_dir = env.path().join("isos");
    let made = env.json(&["iso", "create", "--out", out_dir.to_str().unwrap()], 0);
    let img = &made["images"][0];
    let path = std::path::PathBuf::from(img["path"].as_str().unwrap());
    // Flip one byte in the middle of the first file's data.
    let list = env.json(&["iso", "ls", path.to_str().unwrap()], 0);
    assert!(list.as_array().unwrap().len() > 3);
    let mut bytes = std::fs::read(&path).unwrap();
    let data_start = bytes.len() / 2;
    bytes[data_start] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let out = env
        .cmd()
        .args(["iso", "verify", img["name"].as_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("SHA-256"), "{err}");
    assert!(err.contains(".jpg") || err.contains("a;b.c.d"), "{err}");
}

#[test]
fn a_file_changed_since_the_scan_is_left_out_and_reported() {
    let env = Env::new();
    library(&env);
    env.scan();
    // Same size, different bytes, same mtime: only the hash can tell.
    let victim = env.lib().join("2023/03/café.jpg");
    let mut data = std::fs::read(&victim).unwrap();
    data[10] ^= 1;
    std::fs::write(&victim, &data).unwrap();
    set_mtime(&victim, 1_680_000_000 + 2 * 86_400 * 30);
    let out_dir = env.path().join("isos");
    let out = env
        .cmd()
        .args([
            "iso",
            "create",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert_code(&out, 3);
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["left_out"].as_array().unwrap().len(), 1, "{rep}");
    assert!(rep["left_out"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("café.jpg"));
    assert_eq!(rep["images"][0]["files"], 5);
    // The image made without it verifies.
    let name = rep["images"][0]["name"].as_str().unwrap();
    env.cmd().args(["iso", "verify", name]).assert().success();
}

#[test]
fn bad_iso_arguments_are_explained() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["iso", "verify", "no-such.iso"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("no-such.iso"));
    let junk = env.path().join("junk.iso");
    std::fs::write(&junk, vec![7u8; 100_000]).unwrap();
    let out = env
        .cmd()
        .args(["iso", "ls", junk.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("not a readable ISO 9660 image"),
        "{}",
        stderr(&out)
    );
    let out = env
        .cmd()
        .args(["iso", "create", "-s", "10KB"])
        .output()
        .unwrap();
    assert_code(&out, 2);
}

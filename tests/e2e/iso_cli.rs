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

/// Hostile images (#15, reliability suite): a valid image from `lomob iso create`, patched.
mod hostile {
    use super::library;
    use crate::support::Env;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    const SECTOR: usize = 2048;

    /// One directory record of the primary tree: where it is in the image, its extent and
    /// name.
    struct Rec {
        at: usize,
        lba: u32,
        size: u32,
        is_dir: bool,
        name: Vec<u8>,
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Writes an ISO 9660 both-endian u32.
    fn set_both(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    /// The records of the directory at (lba, size), "." and ".." left out.
    fn records(img: &[u8], lba: u32, size: u32) -> Vec<Rec> {
        let start = lba as usize * SECTOR;
        let mut out = Vec::new();
        let mut i = 0;
        while i < size as usize {
            let len = img[start + i] as usize;
            if len == 0 {
                i = (i / SECTOR + 1) * SECTOR;
                continue;
            }
            let at = start + i;
            let name_len = img[at + 32] as usize;
            let name = img[at + 33..at + 33 + name_len].to_vec();
            if !(name_len == 1 && name[0] <= 1) {
                out.push(Rec {
                    at,
                    lba: u32_at(img, at + 2),
                    size: u32_at(img, at + 10),
                    is_dir: img[at + 25] & 2 != 0,
                    name,
                });
            }
            i += len;
        }
        out
    }

    fn root(img: &[u8]) -> (u32, u32) {
        let pvd = 16 * SECTOR;
        assert_eq!(&img[pvd + 1..pvd + 6], b"CD001");
        (u32_at(img, pvd + 156 + 2), u32_at(img, pvd + 156 + 10))
    }

    /// The first subdirectory of (lba, size) that holds photos (not lomob's own LOMOB/).
    fn first_dir(img: &[u8], (lba, size): (u32, u32)) -> Rec {
        records(img, lba, size)
            .into_iter()
            .find(|r| r.is_dir && r.name != b"LOMOB")
            .expect("a subdirectory")
    }

    /// Every file record of the tree, depth first (the test images are small and sane).
    fn files(img: &[u8], (lba, size): (u32, u32), out: &mut Vec<Rec>) {
        for r in records(img, lba, size) {
            if r.is_dir {
                files(img, (r.lba, r.size), out);
            } else if !r.name.starts_with(b"CATALOG") {
                out.push(r);
            }
        }
    }

    /// A fresh image of the test library, as bytes, and where it is.
    fn image(env: &Env) -> (PathBuf, Vec<u8>) {
        library(env);
        env.scan();
        let out_dir = env.path().join("isos");
        let made = env.json(&["iso", "create", "--out", out_dir.to_str().unwrap()], 0);
        let path = PathBuf::from(made["images"][0]["path"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes)
    }

    /// Runs lomob under a 3 GiB address-space limit (a huge allocation fails instead of
    /// swapping the machine), killed after 60 s: a hang fails the test.
    fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
        let c = env.std_cmd();
        let mut sh = std::process::Command::new("sh");
        sh.arg("-c")
            .arg("ulimit -v 3145728 && exec \"$@\"")
            .arg("sh")
            .arg(c.get_program())
            .args(args)
            .current_dir(env.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        let mut child = sh.spawn().unwrap();
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let o = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut out, &mut s).ok();
            s
        });
        let e = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut err, &mut s).ok();
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("lomob {args:?} still running after 60 s: a hang");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (out, err) = (o.join().unwrap(), e.join().unwrap());
        assert!(
            status.code().is_some(),
            "lomob {args:?} was killed: {status}\n{err}"
        );
        (status.code().unwrap(), out, err)
    }

    /// Every file under `dir`, with its size; nothing else may have been written outside.
    fn written(dir: &Path) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                assert!(!m.file_type().is_symlink(), "{}", e.path().display());
                if m.is_dir() {
                    out.extend(written(&e.path()));
                } else {
                    out.push((e.path(), m.len()));
                }
            }
        }
        out
    }

    /// `iso ls` and `iso extract` of a patched image: both end (no hang, no huge
    /// allocation), and whatever is extracted is inside the target folder and no larger
    /// than the image. Returns (ls exit, ls stdout + stderr, extract exit, extract stderr).
    fn ls_and_extract(env: &Env, img: &Path) -> (i32, String, i32, String) {
        let (ls_code, ls_out, ls_err) = run(env, &["iso", "ls", img.to_str().unwrap()]);
        assert!(
            ls_out.lines().count() < 1000,
            "unbounded listing:\n{ls_out}"
        );
        let to = env.path().join("out");
        let (x_code, _, x_err) = run(
            env,
            &[
                "iso",
                "extract",
                img.to_str().unwrap(),
                "--to",
                to.to_str().unwrap(),
            ],
        );
        let image_len = std::fs::metadata(img).unwrap().len();
        for (p, len) in written(&to) {
            assert!(p.starts_with(&to), "{}", p.display());
            assert!(len <= image_len, "{} is {len} bytes", p.display());
        }
        // Nothing beside the target folder and what the test made.
        let mut top: Vec<String> = std::fs::read_dir(env.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert!(
            top.iter()
                .all(|n| ["home", "isos", "lib", "out"].contains(&n.as_str())),
            "{top:?}"
        );
        (ls_code, format!("{ls_out}{ls_err}"), x_code, x_err)
    }

    /// A directory whose record points back at the root: listed once, not followed.
    #[test]
    fn a_directory_that_loops_to_an_ancestor_is_not_followed() {
        let env = Env::new();
        let (path, mut img) = image(&env);
        let root = root(&img);
        // Images hold full paths: go down to the library folder (the first with two
        // subfolders, 2023 and 2024), then point 2023's first month back at the root.
        let mut dir = first_dir(&img, root);
        while records(&img, dir.lba, dir.size)
            .iter()
            .filter(|r| r.is_dir)
            .count()
            < 2
        {
            dir = first_dir(&img, (dir.lba, dir.size));
        }
        let year = first_dir(&img, (dir.lba, dir.size));
        let month = first_dir(&img, (year.lba, year.size));
        set_both(&mut img, month.at + 2, root.0);
        set_both(&mut img, month.at + 10, root.1);
        std::fs::write(&path, &img).unwrap();
        let (ls, listing, x, err) = ls_and_extract(&env, &path);
        assert_eq!(ls, 0, "{listing}");
        assert_eq!(x, 0, "{err}");
        // The rest of the tree is still listed, and nothing twice.
        assert!(listing.contains("2024/01/empty.jpg"), "{listing}");
        assert_eq!(listing.matches("empty.jpg").count(), 1, "{listing}");
    }

    /// Two files whose extents are the same bytes: both extracted, bounded.
    #[test]
    fn files_with_overlapping_extents_are_extracted_bounded() {
        let env = Env::new();
        let (path, mut img) = image(&env);
        let mut fs = Vec::new();
        files(&img, root(&img), &mut fs);
        let big: Vec<&Rec> = fs.iter().filter(|r| r.size > 0).collect();
        assert!(big.len() >= 2);
        // The second file's extent starts half-way through the first one's.
        set_both(&mut img, big[1].at + 2, big[0].lba + big[0].size / 4096);
        std::fs::write(&path, &img).unwrap();
        let (ls, listing, x, err) = ls_and_extract(&env, &path);
        assert_eq!(ls, 0, "{listing}");
        assert_eq!(x, 0, "{err}");
    }

    /// A file claiming 4 GiB, far beyond the image's end: a clear error naming it, and
    /// no 4 GiB file written.
    #[test]
    fn a_file_larger_than_the_image_is_refused() {
        let env = Env::new();
        let (path, mut img) = image(&env);
        let mut fs = Vec::new();
        files(&img, root(&img), &mut fs);
        let f = fs.iter().find(|r| r.size > 0).unwrap();
        set_both(&mut img, f.at + 10, u32::MAX);
        std::fs::write(&path, &img).unwrap();
        let (ls, listing, x, err) = ls_and_extract(&env, &path);
        assert_eq!(ls, 0, "{listing}");
        assert_ne!(x, 0, "{err}");
        assert!(err.contains("beyond the image"), "{err}");
    }

    /// A directory extent past the end of the image, and a path table there too: a clear
    /// error for the directory; the path table is not what the reader walks.
    #[test]
    fn a_directory_past_the_end_is_refused() {
        let env = Env::new();
        let (path, mut img) = image(&env);
        let pvd = 16 * SECTOR;
        // Path table locations (type L at 140, type M at 148): past the end.
        img[pvd + 140..pvd + 144].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        img[pvd + 148..pvd + 152].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
        std::fs::write(&path, &img).unwrap();
        let (ls, listing, _, _) = ls_and_extract(&env, &path);
        assert_eq!(ls, 0, "a bad path table alone is harmless: {listing}");

        let year = first_dir(&img, root(&img));
        set_both(&mut img, year.at + 2, 0x7fff_fff0);
        std::fs::write(&path, &img).unwrap();
        std::fs::remove_dir_all(env.path().join("out")).ok();
        let (ls, listing, x, err) = ls_and_extract(&env, &path);
        assert_ne!(ls, 0, "{listing}");
        assert!(listing.contains("out of bounds"), "{listing}");
        assert_ne!(x, 0, "{err}");
        assert!(err.contains("out of bounds"), "{err}");
    }
}

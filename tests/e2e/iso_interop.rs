//! Interoperability: images written by lomob's writer must list and extract byte-identical
//! with xorriso, bsdtar (libarchive) and 7-Zip; lomob's reader must read images written by
//! xorriso and genisoimage. A tool whose binary is missing is skipped with a loud message
//! (the project's test script installs them: xorriso libarchive-tools p7zip-full genisoimage).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lomob::iso::{verify, IsoFile, IsoImage, IsoPlan, NameSource, VolumeInfo};
use sha2::{Digest, Sha256};

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--help")
        .output()
        .map(|_| true)
        .unwrap_or(false);
    if !ok {
        eprintln!("\n!!!!!!!! SKIPPING {tool} CHECKS: `{tool}` is not installed !!!!!!!!\n");
    }
    ok
}

fn run(cmd: &mut Command) -> Vec<u8> {
    cmd.env("LC_ALL", "C.UTF-8").env("LANG", "C.UTF-8");
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha_file(p: &Path) -> [u8; 32] {
    let f = File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    sha_reader(f)
}

fn sha_reader(mut r: impl Read) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

/// The SHA-256 of what `cmd` writes to its standard output, read as it comes: a 4 GiB
/// file checked this way takes no disk space (CI machines may have only a few GB free).
fn sha_of_output(cmd: &mut Command) -> [u8; 32] {
    cmd.env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8")
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let sha = sha_reader(child.stdout.take().unwrap());
    let status = child.wait().unwrap();
    assert!(status.success(), "{cmd:?} failed: {status}");
    sha
}

fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(rel))
}

/// Paths (relative, as bytes) of the test tree and their contents.
fn tree_spec() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(String, usize)> = vec![
        ("照片/假期 2024/IMG_0001.jpg".into(), 30_000),
        ("🎉party/🎉.jpg".into(), 4096),
        ("café/é.jpg".into(), 2048),
        ("café/résumé final.txt".into(), 17),
        (format!("long/{}.jpg", "x".repeat(210)), 333),
        (format!("long/{}", "照".repeat(85)), 1000),
        (format!("long/{}.mp4", "é".repeat(110)), 5),
        ("case/a.jpg".into(), 10),
        ("case/A.jpg".into(), 11),
        ("misc/a;b.c.d".into(), 12),
        ("misc/.hidden".into(), 13),
        ("misc/name with spaces.txt".into(), 14),
        ("misc/dots...txt".into(), 15),
        ("misc/UPPER.JPG".into(), 16),
        ("d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/deep.txt".into(), 100),
        ("d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/deeper.txt".into(), 101),
        ("empty/e1".into(), 0),
        ("empty/e2".into(), 0),
        ("top.bin".into(), 3 * 1024 * 1024 + 7),
    ];
    v.sort();
    v.into_iter()
        .enumerate()
        .map(|(i, (path, size))| {
            let content: Vec<u8> = (0..size).map(|j| ((j * 31 + i * 7) % 251) as u8).collect();
            (path.into_bytes(), content)
        })
        .collect()
}

fn make_tree(root: &Path, spec: &[(Vec<u8>, Vec<u8>)]) -> Vec<IsoFile> {
    spec.iter()
        .map(|(rel, content)| {
            let abs = p(root, rel);
            std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
            std::fs::write(&abs, content).unwrap();
            IsoFile {
                path: rel.clone(),
                source: abs,
                size: content.len() as u64,
                mtime: 1_600_000_000,
                mode: 0o644,
                sha256: Sha256::digest(content).into(),
                content: None,
            }
        })
        .collect()
}

/// Writes the image with a hole wherever a whole block is zeros, so the 4 GiB image of a
/// sparse file takes a few MB of disk; readers see the same bytes.
fn write_image(plan: &IsoPlan, out: &Path) {
    let mut f = File::create(out).unwrap();
    let mut reader = plan.reader_at(0);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = reader.read(&mut buf).unwrap();
        if got == 0 {
            break;
        }
        if buf[..got].iter().all(|&b| b == 0) {
            f.seek(SeekFrom::Current(got as i64)).unwrap();
        } else {
            f.write_all(&buf[..got]).unwrap();
        }
        n += got as u64;
    }
    assert_eq!(n, plan.image_size());
    f.set_len(n).unwrap();
    f.flush().unwrap();
}

fn vol() -> VolumeInfo {
    VolumeInfo {
        volume_id: "LOMOB_INTEROP".into(),
        created: 1_700_000_000,
    }
}

fn xorriso_list(img: &Path) -> BTreeSet<String> {
    let out = run(Command::new("xorriso").arg("-indev").arg(img).arg("-find"));
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("'./")?
                .strip_suffix('\'')
                .map(str::to_string)
        })
        .collect()
}

fn bsdtar_list(img: &Path) -> BTreeSet<String> {
    let out = run(Command::new("bsdtar").arg("-tf").arg(img));
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect()
}

fn sevenz_list(img: &Path) -> BTreeSet<String> {
    let out = run(Command::new("7z").arg("l").arg("-slt").arg(img));
    let text = String::from_utf8_lossy(&out);
    let body = text.split("----------").nth(1).unwrap_or("");
    body.lines()
        .filter_map(|l| l.strip_prefix("Path = ").map(str::to_string))
        .collect()
}

/// Lists and extracts with every available tool and compares each file's SHA-256.
/// `joliet`: the path of each file as Joliet readers (7-Zip) show it. `only`: check just
/// this path (used for the 4 GiB image).
fn check_tools(img: &Path, work: &Path, files: &[IsoFile], joliet: &[String], only: Option<&str>) {
    let want: Vec<(String, [u8; 32])> = files
        .iter()
        .map(|f| (String::from_utf8(f.path.clone()).unwrap(), f.sha256))
        .collect();
    let want_j: Vec<(String, [u8; 32])> = joliet
        .iter()
        .cloned()
        .zip(files.iter().map(|f| f.sha256))
        .collect();

    if have("xorriso") {
        let list = xorriso_list(img);
        for (path, _) in &want {
            assert!(
                list.contains(path),
                "xorriso does not list {path}; it lists {list:?}"
            );
        }
        let dir = work.join("x-xorriso");
        let mut cmd = Command::new("xorriso");
        // Runs of zeros become holes, so the sparse 4 GiB file takes no space extracted.
        cmd.arg("-osirrox")
            .arg("on:sparse=1m")
            .arg("-indev")
            .arg(img);
        match only {
            Some(one) => cmd
                .arg("-extract")
                .arg(format!("/{one}"))
                .arg(dir.join(one)),
            None => cmd.arg("-extract").arg("/").arg(&dir),
        };
        run(&mut cmd);
        compare(&dir, &want, only, "xorriso");
        std::fs::remove_dir_all(&dir).ok();
    }
    if have("bsdtar") {
        let list = bsdtar_list(img);
        for (path, _) in &want {
            assert!(
                list.contains(path),
                "bsdtar does not list {path}; it lists {list:?}"
            );
        }
        if let Some(one) = only {
            let got = sha_of_output(Command::new("bsdtar").arg("-xOf").arg(img).arg(one));
            compare_one(&want, one, got, "bsdtar");
        } else {
            let dir = work.join("x-bsdtar");
            std::fs::create_dir_all(&dir).unwrap();
            run(Command::new("bsdtar")
                .arg("-xf")
                .arg(img)
                .arg("-C")
                .arg(&dir));
            compare(&dir, &want, only, "bsdtar");
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    if have("7z") {
        // 7-Zip always reads the Joliet tree when there is one (never Rock Ridge), so it
        // shows Joliet names: identical to the real ones unless a name is longer than 64
        // UTF-16 units or holds a character Joliet forbids (such as ';').
        let list = sevenz_list(img);
        for ((path, _), (jpath, _)) in want.iter().zip(&want_j) {
            assert!(
                list.contains(jpath),
                "7z does not list {jpath}; it lists {list:?}"
            );
            if path != jpath {
                eprintln!("NOTE: 7z shows {path:?} under its Joliet name {jpath:?}");
            }
        }
        if let Some(one) = only {
            let got = sha_of_output(Command::new("7z").arg("x").arg("-so").arg(img).arg(one));
            compare_one(&want_j, one, got, "7z");
        } else {
            let dir = work.join("x-7z");
            run(Command::new("7z")
                .arg("x")
                .arg(img)
                .arg(format!("-o{}", dir.display()))
                .arg("-y"));
            compare(&dir, &want_j, only, "7z");
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}

fn compare_one(want: &[(String, [u8; 32])], path: &str, got: [u8; 32], tool: &str) {
    let (_, sha) = want
        .iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("{path} is not among the files written"));
    assert_eq!(&got, sha, "{tool}: content of {path} differs");
    eprintln!("{tool}: {path} read back byte-identical");
}

fn compare(dir: &Path, want: &[(String, [u8; 32])], only: Option<&str>, tool: &str) {
    let mut n = 0;
    for (path, sha) in want {
        if only.is_some_and(|o| o != path) {
            continue;
        }
        let got = sha_file(&dir.join(path));
        assert_eq!(&got, sha, "{tool}: content of {path} differs");
        n += 1;
    }
    eprintln!("{tool}: {n} file(s) extracted byte-identical");
}

#[test]
fn our_images_read_by_xorriso_bsdtar_7z() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let spec = tree_spec();
    let files = make_tree(&src, &spec);
    let plan = IsoPlan::new(files.clone(), vol()).unwrap();
    let img = tmp.path().join("test.iso");
    write_image(&plan, &img);

    // Our own reader and the catalog.
    let mut iso = IsoImage::open(File::open(&img).unwrap()).unwrap();
    let report = verify(&mut iso).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.ok, files.len());

    let by_path: std::collections::HashMap<_, _> = plan
        .placements()
        .iter()
        .map(|p| (p.path.clone(), p.joliet_path.clone()))
        .collect();
    let joliet: Vec<String> = files.iter().map(|f| by_path[&f.path].clone()).collect();
    check_tools(&img, tmp.path(), &files, &joliet, None);

    // The catalog is there for the tools too.
    if have("bsdtar") {
        assert!(bsdtar_list(&img).contains("LOMOB/CATALOG.JSON"));
    }
}

/// A file over 4 GiB (multi-extent, sparse source): every tool must read it back.
#[test]
fn big_file_multi_extent() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    let big = src.join("big/huge video.bin");
    let size: u64 = 4 * 1024 * 1024 * 1024 + 12345;
    {
        let mut f = File::create(&big).unwrap();
        f.set_len(size).unwrap();
        for (at, data) in [
            (0u64, &b"HEAD"[..]),
            (0xFFFF_F7FE, &b"across the extent boundary"[..]),
            (size - 4, &b"TAIL"[..]),
        ] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(data).unwrap();
        }
    }
    let small = src.join("small.txt");
    std::fs::write(&small, b"small file after a big one").unwrap();
    let files = vec![
        IsoFile {
            path: b"big/huge video.bin".to_vec(),
            source: big.clone(),
            size,
            mtime: 1_600_000_000,
            mode: 0o644,
            sha256: sha_file(&big),
            content: None,
        },
        IsoFile {
            path: b"small.txt".to_vec(),
            source: small.clone(),
            size: 26,
            mtime: 1_600_000_000,
            mode: 0o644,
            sha256: sha_file(&small),
            content: None,
        },
    ];
    let plan = IsoPlan::new(files.clone(), vol()).unwrap();
    let img = tmp.path().join("big.iso");
    write_image(&plan, &img);

    let mut iso = IsoImage::open(File::open(&img).unwrap()).unwrap();
    let e = iso.find(b"big/huge video.bin").unwrap().unwrap();
    assert_eq!(e.size, size);
    assert_eq!(e.extents.len(), 2);
    let report = verify(&mut iso).unwrap();
    assert!(report.is_ok(), "{report:?}");

    let joliet: Vec<String> = files
        .iter()
        .map(|f| String::from_utf8(f.path.clone()).unwrap())
        .collect();
    for one in ["big/huge video.bin", "small.txt"] {
        check_tools(&img, tmp.path(), &files, &joliet, Some(one));
    }
    if have("bsdtar") {
        let out = run(Command::new("bsdtar").arg("-tvf").arg(&img));
        assert!(String::from_utf8_lossy(&out).contains(&size.to_string()));
    }
}

/// lomob's reader on images made by xorriso (Rock Ridge + Joliet, ISO level 3) and
/// genisoimage (Rock Ridge with and without Joliet, and Joliet only; with Rock Ridge it
/// relocates the deep directories with CL/RE, which the reader follows).
#[test]
fn we_read_xorriso_and_genisoimage_images() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let spec = tree_spec();
    let all_files = make_tree(&src, &spec);
    // genisoimage refuses names outside the BMP (emoji) in Joliet: give it a tree without.
    let bmp_src = tmp.path().join("bmp");
    let bmp_spec: Vec<_> = spec
        .iter()
        .filter(|(p, _)| {
            String::from_utf8_lossy(p)
                .chars()
                .all(|c| (c as u32) < 0x10000)
        })
        .cloned()
        .collect();
    let bmp_files = make_tree(&bmp_src, &bmp_spec);
    let mut ran = 0;
    let cases: Vec<(&str, Vec<&str>, NameSource, bool)> = vec![
        (
            "xorriso",
            vec!["-as", "mkisofs", "-R", "-J", "-iso-level", "3"],
            NameSource::RockRidge,
            false,
        ),
        (
            "genisoimage",
            vec!["-R", "-J", "-input-charset", "utf-8"],
            NameSource::RockRidge,
            true,
        ),
        (
            "genisoimage",
            vec!["-R", "-input-charset", "utf-8"],
            NameSource::RockRidge,
            false,
        ),
        (
            "genisoimage",
            vec!["-J", "-input-charset", "utf-8"],
            NameSource::Joliet,
            true,
        ),
    ];
    for (tool, args, source, bmp_only) in cases {
        if !have(tool) {
            continue;
        }
        let (src, files) = if bmp_only {
            (&bmp_src, &bmp_files)
        } else {
            (&src, &all_files)
        };
        let img = tmp.path().join(format!("{tool}-{ran}.iso"));
        run(Command::new(tool)
            .args(&args)
            .arg("-quiet")
            .arg("-o")
            .arg(&img)
            .arg(src));
        let mut iso = IsoImage::open(File::open(&img).unwrap()).unwrap();
        assert_eq!(iso.name_source(), source, "{tool} {args:?}");
        let entries = iso.entries().unwrap();
        let mut checked = 0;
        for f in files {
            let name = String::from_utf8(f.path.clone()).unwrap();
            // Joliet names are only complete when short and free of forbidden characters,
            // and without Rock Ridge genisoimage drops directories deeper than 8 levels.
            let last = name.rsplit('/').next().unwrap();
            if source == NameSource::Joliet
                && (last.encode_utf16().count() > 64
                    || last.contains(';')
                    || name.split('/').count() > 8)
            {
                continue;
            }
            let e = entries
                .iter()
                .find(|e| e.path == f.path)
                .unwrap_or_else(|| panic!("{tool} {args:?}: missing {name}"));
            assert_eq!(e.size, f.size, "{name}");
            let mut data = Vec::new();
            iso.read_file(e, &mut data).unwrap();
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&data)), f.sha256, "{name}");
            if source == NameSource::RockRidge {
                assert_eq!(e.mode.map(|m| m & 0o777), Some(0o644), "{name}");
            }
            checked += 1;
        }
        eprintln!("{tool} {args:?}: read {checked} files back");
        // Every file not skipped above was found and compared (a missing one panics).
        assert!(checked >= files.len() / 2);
        assert!(iso.catalog().unwrap().is_none());
        ran += 1;
    }
}

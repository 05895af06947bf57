//! Unit and property tests of the whole module: writer -> bytes -> reader round trips,
//! determinism, streaming from offsets, source-change detection, path validation, hostile
//! input (mutated images must never panic the reader).

use super::*;
use proptest::prelude::*;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

fn vol() -> VolumeInfo {
    VolumeInfo {
        volume_id: "TEST_VOL".into(),
        created: 1_700_000_000,
    }
}

/// Writes each content to `dir/<i>` and returns the IsoFiles.
fn make_files(dir: &Path, specs: &[(Vec<u8>, Vec<u8>)]) -> Vec<IsoFile> {
    specs
        .iter()
        .enumerate()
        .map(|(i, (path, content))| {
            let src = dir.join(format!("src{i}"));
            std::fs::write(&src, content).unwrap();
            IsoFile {
                path: path.clone(),
                source: src,
                size: content.len() as u64,
                mtime: 1_600_000_000 + i as i64,
                mode: 0o640,
                sha256: sha256_bytes(content),
                content: None,
            }
        })
        .collect()
}

fn stream(plan: &IsoPlan) -> Vec<u8> {
    let mut v = Vec::new();
    plan.reader_at(0).read_to_end(&mut v).unwrap();
    v
}

fn sample() -> Vec<(Vec<u8>, Vec<u8>)> {
    let long = "照".repeat(85); // 255 bytes
    vec![
        (b"a.jpg".to_vec(), b"lower".to_vec()),
        (b"A.jpg".to_vec(), b"upper".to_vec()),
        (b"dir/a;b.c.d".to_vec(), vec![7u8; 5000]),
        ("photos/照片🎉é.jpg".as_bytes().to_vec(), vec![1u8; 2048]),
        (format!("photos/{long}").into_bytes(), b"long".to_vec()),
        (b"raw/\xff\xfe-bytes".to_vec(), b"non utf8".to_vec()),
        (b"empty".to_vec(), Vec::new()),
        (b"empty2".to_vec(), Vec::new()),
        (b"1/2/3/4/5/6/7/8/9/10/deep.txt".to_vec(), b"deep".to_vec()),
    ]
}

#[test]
fn roundtrip_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let files = make_files(tmp.path(), &sample());
    let plan = IsoPlan::new(files.clone(), vol()).unwrap();
    let img = stream(&plan);
    assert_eq!(img.len() as u64, plan.image_size());
    let mut iso = IsoImage::open(Cursor::new(img.clone())).unwrap();
    assert_eq!(iso.name_source(), NameSource::RockRidge);
    let entries = iso.entries().unwrap();
    for (f, (path, content)) in files.iter().zip(sample()) {
        let e = entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("missing {}", String::from_utf8_lossy(&path)));
        assert!(!e.is_dir);
        assert_eq!(e.size, content.len() as u64);
        assert_eq!(e.mtime, f.mtime);
        assert_eq!(e.mode, Some(0o100640));
        let mut got = Vec::new();
        iso.read_file(e, &mut got).unwrap();
        assert_eq!(got, content);
        let p = plan.placements().iter().find(|p| p.path == path).unwrap();
        if !content.is_empty() {
            assert_eq!(e.data_offset(), Some(p.offset));
            assert_eq!(&img[p.offset as usize..][..content.len()], &content[..]);
        }
    }
    // Implicit directories are listed.
    assert!(entries
        .iter()
        .any(|e| e.is_dir && e.path == b"1/2/3/4/5/6/7/8/9/10"));
    let cat = iso.catalog().unwrap().unwrap();
    assert_eq!(&cat, plan.catalog());
    assert_eq!(cat.files.len(), files.len());
    let c = &img[plan.catalog_offset() as usize..][..plan.catalog_bytes().len()];
    assert_eq!(c, plan.catalog_bytes());
    let report = verify(&mut iso).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.ok, files.len());
    // The Joliet tree alone also reads (as 7-Zip and Windows see it).
    let j = plan
        .placements()
        .iter()
        .find(|p| p.path == "photos/照片🎉é.jpg".as_bytes())
        .unwrap();
    assert_eq!(j.joliet_path, "photos/照片🎉é.jpg");
}

#[test]
fn deterministic_and_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let files = make_files(tmp.path(), &sample());
    let a = stream(&IsoPlan::new(files.clone(), vol()).unwrap());
    let mut rev = files.clone();
    rev.reverse();
    let plan = IsoPlan::new(rev, vol()).unwrap();
    let b = stream(&plan);
    assert!(a == b, "input order must not matter");
    for k in [
        0u64,
        1,
        2047,
        2048,
        32768,
        40000,
        a.len() as u64 - 1,
        a.len() as u64,
    ] {
        let mut v = Vec::new();
        plan.reader_at(k).read_to_end(&mut v).unwrap();
        assert_eq!(v, &a[k as usize..], "offset {k}");
    }
    // Seek + small reads.
    let mut r = plan.reader_at(0);
    r.seek(SeekFrom::Start(50_000)).unwrap();
    let mut small = [0u8; 7];
    r.read_exact(&mut small).unwrap();
    assert_eq!(&small, &a[50_000..50_007]);
}

/// The error names the failing file by its index in the list given to the plan (not by
/// its place in the image, which is path order), so a caller can drop exactly that file.
#[test]
fn a_failing_source_is_named_by_its_input_index() {
    let tmp = tempfile::tempdir().unwrap();
    let specs = vec![
        (b"z/last.bin".to_vec(), vec![1u8; 5000]),
        (b"a/first.bin".to_vec(), vec![2u8; 5000]),
    ];
    let mut files = make_files(tmp.path(), &specs);
    let plan = IsoPlan::new(files.clone(), vol()).unwrap();
    assert_eq!(
        plan.placements()[0].input,
        1,
        "placements are in path order"
    );
    std::fs::write(&files[0].source, vec![3u8; 5000]).unwrap();
    let err = std::io::copy(&mut plan.reader_at(0), &mut std::io::sink()).unwrap_err();
    let e = IsoError::from_io(&err).expect("an image error");
    assert!(matches!(e, IsoError::SourceChanged { .. }), "{e}");
    assert_eq!(e.failed_input(), Some(0));

    // A source that cannot be opened (a parent that is now a file: ENOTDIR, even for root).
    let parent = tmp.path().join("dir");
    std::fs::create_dir(&parent).unwrap();
    std::fs::write(parent.join("f"), vec![2u8; 5000]).unwrap();
    files[1].source = parent.join("f");
    std::fs::write(&files[0].source, &specs[0].1).unwrap();
    let plan = IsoPlan::new(files.clone(), vol()).unwrap();
    std::fs::remove_dir_all(&parent).unwrap();
    std::fs::write(&parent, b"not a folder").unwrap();
    let mut r = plan.reader_at(0);
    let err = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
    let e = IsoError::from_io(&err).expect("an image error");
    assert!(matches!(e, IsoError::SourceUnreadable { .. }), "{e}");
    assert_eq!(e.failed_input(), Some(1));
    assert!(e.to_string().contains("a/first.bin"), "{e}");
    // Sticky, and still the same kind of error.
    let again = r.read(&mut [0u8; 10]).unwrap_err();
    assert_eq!(
        IsoError::from_io(&again).and_then(|e| e.failed_input()),
        Some(1)
    );
    assert!(matches!(
        IsoError::from_io(&again),
        Some(IsoError::SourceUnreadable { .. })
    ));
}

/// A member with a content id is checked against it (xxh3-128 of its bytes): the planned
/// bytes stream, one changed byte of the same size does not.
#[test]
fn a_member_is_checked_against_its_content_id() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = vec![7u8; (1 << 20) + 5];
    let mut files = make_files(tmp.path(), &[(b"c/id.bin".to_vec(), bytes.clone())]);
    files[0].content = Some(xxhash_rust::xxh3::xxh3_128(&bytes).to_be_bytes());
    let plan = IsoPlan::new(files.clone(), vol()).unwrap();
    assert!(std::io::copy(&mut plan.reader_at(0), &mut std::io::sink()).is_ok());
    let mut changed = bytes.clone();
    changed[1 << 19] = 8;
    std::fs::write(&files[0].source, &changed).unwrap();
    let err = std::io::copy(&mut plan.reader_at(0), &mut std::io::sink()).unwrap_err();
    match IsoError::from_io(&err) {
        Some(IsoError::SourceChanged { path, reason, .. }) => {
            assert_eq!(path, "c/id.bin");
            assert!(reason.contains("differ"), "{reason}");
        }
        other => panic!("unexpected {other:?} / {err}"),
    }
}

#[test]
fn source_changed_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let specs = vec![
        (b"a/one.bin".to_vec(), vec![1u8; 3 << 20]),
        (b"b/two.bin".to_vec(), vec![2u8; 10_000]),
    ];
    let files = make_files(tmp.path(), &specs);
    let plan = IsoPlan::new(files.clone(), vol()).unwrap();
    // Same size, different content.
    let mut changed = vec![1u8; 3 << 20];
    changed[(3 << 20) - 1] = 9;
    std::fs::write(&files[0].source, &changed).unwrap();
    let err = std::io::copy(&mut plan.reader_at(0), &mut std::io::sink()).unwrap_err();
    match IsoError::from_io(&err) {
        Some(IsoError::SourceChanged { path, .. }) => assert_eq!(path, "a/one.bin"),
        other => panic!("unexpected {other:?} / {err}"),
    }
    // Errors are sticky.
    let mut r = plan.reader_at(0);
    assert!(std::io::copy(&mut r, &mut std::io::sink()).is_err());
    assert!(r.read(&mut [0u8; 10]).is_err());
    // Resuming inside the file skips hashing (documented) but still checks the size.
    let off = plan.placements()[0].offset + 4096;
    assert!(std::io::copy(&mut plan.reader_at(off), &mut std::io::sink()).is_ok());
    // Truncated.
    std::fs::write(&files[1].source, vec![2u8; 9_999]).unwrap();
    std::fs::write(&files[0].source, &specs[0].1).unwrap();
    let err = std::io::copy(&mut plan.reader_at(0), &mut std::io::sink()).unwrap_err();
    assert!(
        matches!(IsoError::from_io(&err), Some(IsoError::SourceChanged { path, .. }) if path == "b/two.bin")
    );
    let off = plan.placements()[1].offset + 100;
    assert!(std::io::copy(&mut plan.reader_at(off), &mut std::io::sink()).is_err());
    // Grown.
    std::fs::write(&files[1].source, vec![2u8; 10_001]).unwrap();
    assert!(std::io::copy(&mut plan.reader_at(0), &mut std::io::sink()).is_err());
    // Deleted.
    std::fs::remove_file(&files[1].source).unwrap();
    assert!(std::io::copy(&mut plan.reader_at(0), &mut std::io::sink()).is_err());
}

#[test]
fn path_validation() {
    let f = |p: &[u8]| IsoFile {
        path: p.to_vec(),
        source: "/nonexistent".into(),
        size: 1,
        mtime: 0,
        mode: 0o644,
        sha256: [0; 32],
        content: None,
    };
    let bad: Vec<&[u8]> = vec![b"", b"/abs", b"a//b", b"a/", b"./a", b"a/../b", b"a\0b"];
    for p in bad {
        assert!(
            matches!(
                IsoPlan::new(vec![f(p)], vol()),
                Err(IsoError::InvalidPath { .. })
            ),
            "{p:?}"
        );
    }
    let long = vec![b'x'; 256];
    assert!(matches!(
        IsoPlan::new(vec![f(&long)], vol()),
        Err(IsoError::NameTooLong { .. })
    ));
    assert!(IsoPlan::new(vec![f(&long[..255])], vol()).is_ok());
    assert!(matches!(
        IsoPlan::new(vec![f(b"a/b"), f(b"a/b")], vol()),
        Err(IsoError::DuplicatePath { .. })
    ));
    assert!(matches!(
        IsoPlan::new(vec![f(b"a/b"), f(b"a")], vol()),
        Err(IsoError::FileDirConflict { .. })
    ));
    assert!(matches!(
        IsoPlan::new(vec![f(b"a"), f(b"a/b")], vol()),
        Err(IsoError::FileDirConflict { .. })
    ));
    assert!(matches!(
        IsoPlan::new(vec![f(b"LOMOB/CATALOG.JSON")], vol()),
        Err(IsoError::InvalidPath { .. })
    ));
    assert!(IsoPlan::new(vec![f(b"LOMOB/other")], vol()).is_ok());
}

/// Multi-extent metadata can be checked without 4 GiB of data: the plan is pure and the
/// reader only reads metadata for `entries()`.
#[test]
fn multi_extent_metadata() {
    let size = 9 * (1u64 << 30) + 5;
    let files = vec![IsoFile {
        path: "big/视频.mp4".as_bytes().to_vec(),
        source: "/nonexistent/big".into(),
        size,
        mtime: 1_650_000_000,
        mode: 0o600,
        sha256: [0; 32],
        content: None,
    }];
    let plan = IsoPlan::new(files, vol()).unwrap();
    assert!(plan.image_size() > size);
    let iso = IsoImage::open(plan.reader_at(0)).unwrap();
    let e = iso.find("big/视频.mp4".as_bytes()).unwrap().unwrap();
    assert_eq!(e.size, size);
    assert_eq!(e.extents.len(), 3);
    assert_eq!(e.extents[0].len as u64, 0xFFFF_F800);
    assert_eq!(e.extents[1].lba, e.extents[0].lba + 0xFFFF_F800 / 2048);
    assert_eq!(e.mode, Some(0o100600));
    assert_eq!(e.data_offset(), Some(plan.placements()[0].offset));
}

#[test]
fn many_files_one_dir_layout() {
    // Forces directory extents over many sectors and many continuation areas.
    let tmp = tempfile::tempdir().unwrap();
    let specs: Vec<(Vec<u8>, Vec<u8>)> = (0..600)
        .map(|i| {
            let name = format!("d/{}{i:04}.jpg", "長い名前".repeat(1 + i % 20));
            (name.into_bytes(), vec![(i % 251) as u8; i % 3])
        })
        .collect();
    let files = make_files(tmp.path(), &specs);
    let plan = IsoPlan::new(files, vol()).unwrap();
    let mut iso = IsoImage::open(Cursor::new(stream(&plan))).unwrap();
    let entries = iso.entries().unwrap();
    for (p, c) in &specs {
        let e = entries.iter().find(|e| &e.path == p).unwrap();
        let mut got = Vec::new();
        iso.read_file(e, &mut got).unwrap();
        assert_eq!(&got, c);
    }
    assert!(verify(&mut iso).unwrap().is_ok());
}

#[test]
fn extraction_is_contained() {
    let tmp = tempfile::tempdir().unwrap();
    let files = make_files(tmp.path(), &sample());
    let plan = IsoPlan::new(files, vol()).unwrap();
    let mut iso = IsoImage::open(Cursor::new(stream(&plan))).unwrap();
    let out = tmp.path().join("out");
    let rep = extract_all(&mut iso, &out).unwrap();
    assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
    for (p, c) in sample() {
        use std::os::unix::ffi::OsStrExt;
        let got = std::fs::read(out.join(std::ffi::OsStr::from_bytes(&p))).unwrap();
        assert_eq!(got, c);
    }
    // A symlink planted where a directory will go is refused, not followed.
    let out2 = tmp.path().join("out2");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&out2).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, out2.join("dir")).unwrap();
    assert!(extract_paths(&mut iso, &[b"dir".to_vec()], &out2).is_err());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // A symlink planted at a file's place is replaced, not written through.
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    std::os::unix::fs::symlink(&victim, out2.join("a.jpg")).unwrap();
    extract_paths(&mut iso, &[b"a.jpg".to_vec()], &out2).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    assert_eq!(std::fs::read(out2.join("a.jpg")).unwrap(), b"lower");
    assert!(extract_paths(&mut iso, &[b"nope".to_vec()], &out2).is_err());
}

#[test]
fn hostile_names_are_skipped_on_extraction() {
    // Patch a Rock Ridge NM in a valid image to "..": entries() reports it, extraction skips.
    let tmp = tempfile::tempdir().unwrap();
    let files = make_files(tmp.path(), &[(b"zz".to_vec(), b"x".to_vec())]);
    let plan = IsoPlan::new(files, vol()).unwrap();
    let mut img = stream(&plan);
    let pos = img
        .windows(7)
        .position(|w| w == b"NM\x07\x01\x00zz")
        .unwrap();
    img[pos + 5] = b'.';
    img[pos + 6] = b'.';
    let mut iso = IsoImage::open(Cursor::new(img)).unwrap();
    let out = tmp.path().join("o");
    let rep = extract_all(&mut iso, &out).unwrap();
    assert_eq!(rep.skipped.len(), 1);
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn garbage_is_rejected() {
    assert!(IsoImage::open(Cursor::new(vec![0u8; 100])).is_err());
    assert!(IsoImage::open(Cursor::new(vec![0u8; 40_000])).is_err());
}

/// Feeds `img` to the reader; must not panic (errors are fine).
fn exercise(img: Vec<u8>) {
    if let Ok(mut iso) = IsoImage::open(Cursor::new(img)) {
        if let Ok(entries) = iso.entries() {
            for e in entries.iter().take(50) {
                let _ = iso.read_file(e, &mut std::io::sink());
            }
        }
        let _ = iso.catalog();
    }
}

fn small_image() -> Vec<u8> {
    static IMG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMG.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let files = make_files(tmp.path(), &sample());
        stream(&IsoPlan::new(files, vol()).unwrap())
    })
    .clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_roundtrip(
        specs in proptest::collection::btree_map(
            proptest::collection::vec(
                prop_oneof![
                    "[a-zA-Z0-9 ._;-]{1,40}",
                    "[é照片🎉a-z]{1,20}",
                    "[a-z]{60,120}",
                ],
                1..4,
            ),
            (0usize..5000, any::<u8>()),
            1..12,
        )
    ) {
        // Drop specs whose path is a prefix directory of another (file/dir conflicts) and
        // invalid components.
        let mut list: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        'outer: for (comps, (size, byte)) in &specs {
            if comps.iter().any(|c| c == "." || c == "..") {
                continue;
            }
            let path = comps.join("/").into_bytes();
            for (p, _) in &list {
                let (a, b) = if p.len() < path.len() { (p, &path) } else { (&path, p) };
                if a == b || (b.starts_with(a) && b[a.len()] == b'/') {
                    continue 'outer;
                }
            }
            if path.starts_with(b"LOMOB") { continue; }
            list.push((path, vec![*byte; *size]));
        }
        let tmp = tempfile::tempdir().unwrap();
        let files = make_files(tmp.path(), &list);
        let plan = IsoPlan::new(files.clone(), vol()).unwrap();
        let img = stream(&plan);
        prop_assert_eq!(img.len() as u64, plan.image_size());
        let mut iso = IsoImage::open(Cursor::new(img.clone())).unwrap();
        let entries = iso.entries().unwrap();
        for (p, c) in &list {
            let e = entries.iter().find(|e| &e.path == p).unwrap();
            let mut got = Vec::new();
            iso.read_file(e, &mut got).unwrap();
            prop_assert_eq!(&got, c);
        }
        prop_assert!(verify(&mut iso).unwrap().is_ok());
        // Determinism and offsets.
        let again = stream(&IsoPlan::new(files, vol()).unwrap());
        prop_assert!(img == again);
        let k = (specs.len() as u64 * 7919 * 2048 + 13) % (img.len() as u64);
        let mut suffix = Vec::new();
        plan.reader_at(k).read_to_end(&mut suffix).unwrap();
        prop_assert!(suffix == img[k as usize..]);
    }
}

/// Case count of the hostile-input property tests: 64 by default, more through
/// `ISO_FUZZ_CASES` (scripts/fuzz.sh uses this on stable Rust).
fn fuzz_cases() -> u32 {
    std::env::var("ISO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    #[test]
    fn mutated_images_never_panic(
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..64),
        meta_only in any::<bool>(),
    ) {
        let mut img = small_image();
        // Mostly hit the metadata area, where the parser works.
        let span = if meta_only { img.len().min(64 * 2048) } else { img.len() };
        for (i, b) in muts {
            let at = i.index(span);
            img[at] = b;
        }
        exercise(img);
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..80_000)) {
        if bytes.len() > 16 * 2048 + 6 {
            // Give it a descriptor signature so the parser gets further.
            bytes[16 * 2048] = 1;
            bytes[16 * 2048 + 1..16 * 2048 + 6].copy_from_slice(b"CD001");
        }
        exercise(bytes);
    }
}

/// The reader is handed to upload threads: it must be `Send` (and so must the plan).
#[test]
fn reader_and_plan_are_send() {
    fn is_send<T: Send + 'static>() {}
    is_send::<ImageReader>();
    is_send::<IsoPlan>();
}

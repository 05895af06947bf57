//! End-to-end tests of `lomob backup` and `lomob sync`: staging, packing at the threshold or
//! on demand, archiving with verification, freeing staged copies, snapshots, fan-out with a
//! failing site, and S3 with Deep Archive semantics (moto).

use crate::support::{
    age_manifest, assert_code, files_under, make_bucket, s3_client, service_var, set_mtime, stderr,
    unique, Env,
};

fn library(env: &Env, n: usize, size: usize) {
    for i in 0..n {
        let data: Vec<u8> = (0..size)
            .map(|x| (x as u32 * 7 + i as u32 * 13) as u8)
            .collect();
        let p = env.write(
            &format!("20{:02}/0{}/IMG_{i:04}.jpg", 20 + i % 3, 1 + i % 9),
            &data,
        );
        set_mtime(&p, 1_600_000_000 + i as i64 * 86_400);
    }
}

fn data_dir(env: &Env) -> std::path::PathBuf {
    env.path().join("home/.local/share/lomob")
}

#[test]
fn backup_on_the_embedded_default_stages_then_packs_and_frees() {
    let env = Env::new();
    library(&env, 8, 50_000);
    let lib = env.lib();
    let lib = lib.to_str().unwrap();

    // The daily job with no configuration at all: scan, then stage on the local site.
    let r = env.json(&["backup", lib], 0);
    let site = &r[0];
    assert_eq!(site["site"], "local");
    assert_eq!(site["staged_files"], 8, "{r}");
    assert_eq!(
        site["images"].as_array().unwrap().len(),
        0,
        "below the 10GB threshold"
    );
    let stage = data_dir(&env).join("local/stage");
    let staged: Vec<String> = files_under(&stage);
    assert_eq!(
        staged.iter().filter(|f| f.starts_with("stage/")).count(),
        8,
        "{staged:?}"
    );
    assert!(
        staged.iter().any(|f| f.starts_with("meta/manifest-")),
        "{staged:?}"
    );

    // Nothing new: nothing is uploaded again, not even a manifest snapshot (the last one
    // still describes everything).
    let snapshots = || -> Vec<String> {
        files_under(&stage)
            .into_iter()
            .filter(|f| f.starts_with("meta/manifest-"))
            .collect()
    };
    let first = snapshots();
    assert_eq!(first.len(), 1, "{first:?}");
    let r = env.json(&["backup", lib], 0);
    assert_eq!(r[0]["staged_files"], 0, "{r}");
    assert_eq!(r[0]["requests"]["put"], 0, "nothing to put: {r}");
    assert_eq!(snapshots(), first);
    // A snapshot that is gone from the stage is put there again.
    std::fs::remove_file(stage.join(&first[0])).unwrap();
    let r = env.json(&["backup", lib], 0);
    assert_eq!(r[0]["requests"]["put"], 1, "the snapshot again: {r}");
    assert_eq!(snapshots().len(), 1);

    // Pack now: one image, verified, catalog beside it, staged copies freed.
    let r = env.json(&["sync", "--site", "local", "--pack-now"], 0);
    assert_eq!(r[0]["images"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r[0]["archived_files"], 8);
    assert_eq!(r[0]["freed_files"], 8);
    let archive = data_dir(&env).join("local/archive");
    let archived = files_under(&archive);
    let image = archived
        .iter()
        .find(|f| f.ends_with(".iso"))
        .unwrap_or_else(|| panic!("{archived:?}"));
    assert!(archived.iter().any(|f| f.ends_with(".iso.catalog.json")));
    assert!(files_under(&stage).iter().all(|f| !f.starts_with("stage/")));
    // The image is complete and reads back byte-identical.
    let image = archive.join(image);
    let v = env.json(&["iso", "verify", image.to_str().unwrap()], 0);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    let to = env.path().join("out");
    env.cmd()
        .args([
            "iso",
            "extract",
            image.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ])
        .assert()
        .success();
    let rel = env.lib().join("2020/01/IMG_0000.jpg");
    let extracted = to.join(rel.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(&extracted).unwrap(),
        std::fs::read(&rel).unwrap()
    );

    let list = env.json(&["iso", "list"], 0);
    assert!(list[0]["status"]
        .as_str()
        .unwrap()
        .starts_with("Uploaded to local"));

    // A changed file is a new version: staged again, the archived one stays.
    let p = env.write("2020/01/IMG_0000.jpg", b"edited");
    set_mtime(&p, 1_700_000_000);
    let r = env.json(&["backup", lib], 0);
    assert_eq!(r[0]["staged_files"], 1, "{r}");
    assert!(archive
        .join(archived.iter().find(|f| f.ends_with(".iso")).unwrap())
        .exists());
}

/// One site's report out of a `--json` sync or backup report.
fn site(report: &serde_json::Value, name: &str) -> serde_json::Value {
    report
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == name)
        .unwrap_or_else(|| panic!("no site {name} in {report}"))
        .clone()
}

#[test]
fn the_threshold_triggers_packing_into_images_of_the_configured_size() {
    let env = Env::new();
    library(&env, 12, 400_000); // 4.8 MB
    let root = env.path().display().to_string();
    let cfg = env.config(&format!(
        r#"
[library]
roots = ["{root}/lib"]

[sites.nas]
pack-threshold = "3MB"
iso-size = "2MB"
stage = {{ kind = "fs", root = "{root}/nas-stage" }}
archive = {{ kind = "fs", root = "{root}/nas-archive" }}
"#
    ));
    let r = env.json(&["--config", &cfg, "backup"], 0);
    let images = r[0]["images"].as_array().unwrap();
    // Full images only, straight from the originals; what is left is staged and waits for
    // the threshold again.
    assert!(images.len() >= 2, "{r}");
    assert_eq!(
        r[0]["archived_files"].as_u64().unwrap() + r[0]["staged_files"].as_u64().unwrap(),
        12,
        "{r}"
    );
    assert_eq!(r[0]["freed_files"], 0, "{r}");
    assert_eq!(r[0]["pending_bytes"], r[0]["staged_bytes"], "{r}");
    for i in files_under(&env.path().join("nas-archive")) {
        if i.ends_with(".iso") {
            let size = std::fs::metadata(env.path().join("nas-archive").join(&i))
                .unwrap()
                .len();
            assert!(size <= 2_000_000, "{i} is {size} bytes");
        }
    }
    let waiting = r[0]["pending_bytes"].as_u64().unwrap();
    assert!(waiting < 2_000_000, "{r}");
    let staged_before = r[0]["staged_files"].as_u64().unwrap();
    assert!(staged_before > 0, "{r}");
    // More files pass the threshold again: the staged ones, oldest, go into the next image
    // first, and their staged copies are freed once it is verified.
    for i in 0..6 {
        env.write(&format!("2025/new_{i}.bin"), &vec![i as u8 + 1; 400_000]);
    }
    let r = env.json(&["--config", &cfg, "backup"], 0);
    assert!(!r[0]["images"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r[0]["freed_files"].as_u64().unwrap(), staged_before, "{r}");
    // Status shows the runs.
    let out = env
        .cmd()
        .args(["--config", &cfg, "status"])
        .output()
        .unwrap();
    assert_code(&out, 0);
}

#[test]
fn one_unreachable_site_does_not_stop_the_others() {
    let env = Env::new();
    library(&env, 3, 10_000);
    let root = env.path().display().to_string();
    let cfg = env.config(&format!(
            r#"
[library]
roots = ["{root}/lib"]

[sites.good]
stage = {{ kind = "fs", root = "{root}/good-stage" }}
archive = {{ kind = "fs", root = "{root}/good-archive" }}

[sites.gone]
stage = {{ kind = "s3", bucket = "b", endpoint = "http://127.0.0.1:9", access-key-id = "k", secret-access-key = "s" }}
archive = {{ kind = "fs", root = "{root}/gone-archive" }}
[sites.gone.transfer]
retries = 1
timeout-secs = 5
"#
        ),
    );
    let out = env
        .cmd()
        .args(["--config", &cfg, "backup", "--json"])
        .output()
        .unwrap();
    // The server could not be reached: exit 5, nothing lost, the next run continues.
    assert_code(&out, 5);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by = |n: &str| site(&r, n);
    assert_eq!(by("good")["ok"], true);
    assert_eq!(by("good")["staged_files"], 3);
    assert_eq!(by("gone")["ok"], false);
    assert_eq!(by("gone")["errors"][0]["kind"], "transient", "{r}");
    let errors = by("gone")["errors"].to_string();
    assert!(errors.contains("site gone"), "{errors}");
    assert!(errors.contains("stage"), "{errors}");
    // A human run prints the table and the reason.
    let out = env
        .cmd()
        .args(["--config", &cfg, "sync", "--all"])
        .output()
        .unwrap();
    assert_code(&out, 5);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));
    assert!(stderr(&out).contains("gone"));
}

#[test]
fn sync_arguments_are_checked() {
    let env = Env::new();
    let out = env.cmd().args(["sync"]).output().unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--site NAME"));
    let out = env.cmd().args(["sync", "--site", "nope"]).output().unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("\"nope\""));
    assert!(stderr(&out).contains("local"));
}

#[test]
fn dry_run_reports_and_changes_nothing() {
    let env = Env::new();
    library(&env, 4, 10_000);
    let lib = env.lib();
    env.json(&["scan", lib.to_str().unwrap()], 0);
    let r = env.json(&["sync", "--site", "local", "--dry-run", "--pack-now"], 0);
    // Packing now, the files would go straight into the image.
    assert_eq!(r[0]["staged_files"], 0, "{r}");
    assert_eq!(r[0]["archived_files"], 4, "{r}");
    assert_eq!(r[0]["images"].as_array().unwrap().len(), 1);
    let r = env.json(&["sync", "--site", "local", "--dry-run"], 0);
    assert_eq!(r[0]["staged_files"], 4, "{r}");
    assert_eq!(r[0]["images"].as_array().unwrap().len(), 0);
    assert!(!data_dir(&env).join("local/stage/stage").exists());
    let out = env
        .cmd()
        .args(["sync", "--site", "local", "--dry-run"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("REQUEST COST"));
}

fn make_buckets(endpoint: &str, buckets: &[&str]) {
    for b in buckets {
        make_bucket(endpoint, "k", "s", b);
    }
}

fn head(endpoint: &str, bucket: &str, key: &str) -> Option<lomob_backends::s3::client::ObjectHead> {
    let c = s3_client(
        endpoint,
        "k",
        "s",
        bucket,
        lomob_backends::StorageClass::Standard,
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(c.head_object(key))
        .ok()
}

#[test]
fn s3_stage_and_deep_archive_on_moto() {
    let Some(endpoint) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    library(&env, 6, 300_000);
    let tag = unique(&env);
    let (stage_b, archive_b) = (format!("stage-{tag}"), format!("archive-{tag}"));
    make_buckets(&endpoint, &[&stage_b, &archive_b]);
    let root = env.path().display().to_string();
    let cfg = env.config(&format!(
            r#"
[library]
roots = ["{root}/lib"]

[sites.cloud]
iso-size = "1GB"
stage = {{ kind = "s3", bucket = "{stage_b}", endpoint = "{endpoint}", access-key-id = {{ env = "T_KEY" }}, secret-access-key = {{ env = "T_SECRET" }} }}
archive = {{ kind = "glacier", bucket = "{archive_b}", endpoint = "{endpoint}", access-key-id = {{ env = "T_KEY" }}, secret-access-key = {{ env = "T_SECRET" }}, part-size = "5MiB" }}
"#
        ),
    );
    let run = |args: &[&str], code: i32| {
        let out = env
            .cmd()
            .env("T_KEY", "testkey")
            .env("T_SECRET", "TESTSECRETVALUE")
            .args(["--config", &cfg])
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        assert_code(&out, code);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("TESTSECRETVALUE"));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let r = run(&["backup"], 0);
    assert_eq!(r[0]["staged_files"], 6, "{r}");
    let m = env.json_lines(&["--config", &cfg, "list", "files"], 0);
    let xxh = m[0]["xxh3"].as_str().unwrap().to_string();
    let staged = head(&endpoint, &stage_b, &format!("stage/{xxh}")).expect("staged object");
    assert_eq!(staged.storage_class, "STANDARD");
    assert_eq!(staged.size, 300_000);

    let r = run(&["sync", "--site", "cloud", "--pack-now"], 0);
    let name = r[0]["images"][0].as_str().unwrap().to_string();
    let img = head(&endpoint, &archive_b, &format!("archive/{name}")).expect("image object");
    assert_eq!(img.storage_class, "DEEP_ARCHIVE");
    let list = env.json(&["--config", &cfg, "iso", "list"], 0);
    assert_eq!(img.metadata.get("fingerprint").map(String::len), Some(64));
    assert_eq!(img.size, list[0]["size"].as_u64().unwrap());
    // One PUT: the ETag is the MD5 of the image, checked by lomob as it was sent.
    assert!(!img.etag.contains('-'), "{img:?}");
    let catalog = head(
        &endpoint,
        &archive_b,
        &format!("archive/{name}.catalog.json"),
    )
    .expect("catalog object");
    assert_eq!(catalog.storage_class, "STANDARD", "readable without a thaw");
    // Staged copies are gone once the image is verified.
    assert!(head(&endpoint, &stage_b, &format!("stage/{xxh}")).is_none());
    // Requests, whatever the number of files inside: the image in one PUT, its catalog in
    // another, and the manifest snapshot on the stage.
    assert_eq!(r[0]["requests"]["put"], 3, "{r}");
    assert_eq!(r[0]["requests"]["post"], 0, "{r}");

    // Cost: one cold object instead of six, and its price beside one object per file.
    let c = env.json(&["--config", &cfg, "cost", "--site", "cloud"], 0);
    assert_eq!(c[0]["archive_objects"], 1, "{c}");
    assert_eq!(c[0]["per_file_objects"], 6, "{c}");
    assert!(c[0]["per_file_put_cost"].as_f64().unwrap() > 0.0, "{c}");
    assert!(
        c[0]["storage_per_month"].as_f64().unwrap()
            < c[0]["per_file_storage_per_month"].as_f64().unwrap(),
        "{c}"
    );
    let s = env.json(&["--config", &cfg, "status"], 0);
    assert_eq!(s["sites"][0]["archived"]["files"], 6, "{s}");
    assert_eq!(s["sites"][0]["staged"]["files"], 0, "{s}");
    assert_eq!(s["sites"][0]["not_yet_safe"]["files"], 0, "{s}");
}

#[test]
fn parents_site_sftp_stage_and_local_archive() {
    let (Some(host), Some(port), Some(user), Some(key), Some(home)) = (
        service_var("LOMOB_TEST_SFTP_HOST"),
        service_var("LOMOB_TEST_SFTP_PORT"),
        service_var("LOMOB_TEST_SFTP_USER"),
        service_var("LOMOB_TEST_SFTP_KEY"),
        service_var("LOMOB_TEST_SFTP_ROOT"),
    ) else {
        return;
    };
    let env = Env::new();
    library(&env, 5, 100_000);
    let root = env.path().display().to_string();
    let sub = env
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let remote = format!("{home}/{sub}");
    let cfg = env.config(&format!(
            r#"
[library]
roots = ["{root}/lib"]

[sites.parents]
stage = {{ kind = "sftp", host = "{host}:{port}", user = "{user}", key = "{key}", root = "{remote}", known-hosts = "accept" }}
archive = {{ kind = "fs", root = "{root}/usb-disk" }}
"#
        ),
    );
    let r = env.json(&["--config", &cfg, "backup"], 0);
    assert_eq!(r[0]["staged_files"], 5, "{r}");
    // The sftp server is this machine: its files are visible on disk.
    let on_server = files_under(std::path::Path::new(&remote));
    assert_eq!(
        on_server.iter().filter(|f| f.starts_with("stage/")).count(),
        5,
        "{on_server:?}"
    );
    assert!(on_server.iter().any(|f| f.starts_with("meta/manifest-")));
    let r = env.json(
        &["--config", &cfg, "sync", "--site", "parents", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["archived_files"], 5, "{r}");
    let on_server = files_under(std::path::Path::new(&remote));
    assert!(
        on_server.iter().all(|f| !f.starts_with("stage/")),
        "{on_server:?}"
    );
    assert_eq!(
        files_under(&env.path().join("usb-disk/archive"))
            .iter()
            .filter(|f| f.ends_with(".iso"))
            .count(),
        1
    );
    let _ = std::fs::remove_dir_all(&remote);
}

/// A file whose bytes change after the scan but keep their size and mtime is caught while
/// its image streams into the archive: the upload stops before it completes, the file is
/// left out, and the image is sent again without it (safety issue, item 9).
#[test]
fn a_file_changed_under_an_image_is_left_out_and_nothing_wrong_is_stored() {
    let moto = service_var("LOMOB_TEST_MOTO_ENDPOINT");
    let env = Env::new();
    library(&env, 5, 50_000);
    let root = env.path().display().to_string();
    let mut archives = vec![format!("{{ kind = \"fs\", root = \"{root}/fs-archive\" }}")];
    if let Some(ep) = &moto {
        let bucket = format!("changed-{}", unique(&env));
        make_buckets(ep, &[&bucket]);
        archives.push(format!(
            "{{ kind = \"glacier\", bucket = \"{bucket}\", endpoint = \"{ep}\", access-key-id = \"k\", secret-access-key = \"s\" }}"
        ));
    }
    let mut text = format!("[library]\nroots = [\"{root}/lib\"]\n");
    for (i, a) in archives.iter().enumerate() {
        text.push_str(&format!(
            "[sites.s{i}]\nstage = {{ kind = \"fs\", root = \"{root}/stage{i}\" }}\narchive = {a}\n"
        ));
    }
    let cfg = env.config(&text);
    env.json(&["--config", &cfg, "scan"], 0);
    // Same size, same mtime, other bytes: only the SHA-256 can tell.
    let victim = files_under(&env.lib())
        .into_iter()
        .find(|f| f.ends_with("IMG_0002.jpg"))
        .unwrap();
    let path = env.lib().join(&victim);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40_000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    set_mtime(&path, 1_600_000_000 + 2 * 86_400);
    // The first site to read it finds the change: the upload stops before it completes,
    // the file is left out of the image, and since its stat did not change (bit rot, or an
    // editor that keeps dates) its new bytes are recorded at once as a new version, flagged,
    // and staged; the scanned bytes were never copied anywhere, so they are reported lost.
    let r = env.json(&["--config", &cfg, "sync", "--site", "s0", "--pack-now"], 0);
    let s0 = &r[0];
    assert_eq!(s0["ok"], true, "{r}");
    assert_eq!(s0["archived_files"], 4, "{r}");
    assert_eq!(s0["images"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(s0["staged_files"], 1, "the new version, staged: {r}");
    assert_eq!(s0["silent_changes"].as_array().unwrap().len(), 1, "{r}");
    assert!(s0["silent_changes"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("IMG_0002.jpg"));
    assert_eq!(s0["lost_versions"].as_array().unwrap().len(), 1, "{r}");
    // A later site reads the new version like any other file.
    if moto.is_some() {
        let r = env.json(&["--config", &cfg, "sync", "--site", "s1", "--pack-now"], 0);
        assert_eq!(r[0]["archived_files"], 5, "{r}");
        assert_eq!(r[0]["silent_changes"].as_array().unwrap().len(), 0, "{r}");
    }
    // Nothing waits forever: the next run has nothing left to do for that file.
    let r = env.json(&["--config", &cfg, "sync", "--site", "s0", "--pack-now"], 0);
    assert_eq!(r[0]["ok"], true, "{r}");
    assert_eq!(r[0]["skipped_changed"], 0, "{r}");
    let st = env.json(&["--config", &cfg, "status"], 0);
    assert_eq!(st["silent_changes"], 1, "{st}");
    assert_eq!(st["lost_versions"]["files"], 1, "{st}");
    // The image on disk holds the four others and reads back clean.
    let image = files_under(&env.path().join("fs-archive"))
        .into_iter()
        .find(|f| f.ends_with(".iso"))
        .unwrap();
    let out = env
        .cmd()
        .args(["iso", "verify"])
        .arg(env.path().join("fs-archive").join(&image))
        .output()
        .unwrap();
    assert_code(&out, 0);
    let listing = env
        .cmd()
        .args(["iso", "ls"])
        .arg(env.path().join("fs-archive").join(&image))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(!listing.contains("IMG_0002"), "{listing}");
    assert!(listing.contains("IMG_0001"), "{listing}");
    // No partial object anywhere.
    assert!(!files_under(&env.path().join("fs-archive"))
        .iter()
        .any(|f| f.ends_with(".partial")));
}

/// Originals that changed, vanished or became unreadable after they were staged are packed
/// from their staged copies (streamed to a temporary file and checked), never from the new bytes.
#[test]
fn staged_copies_stand_in_for_originals_that_changed_or_vanished() {
    let env = Env::new();
    library(&env, 4, 60_000);
    let lib = env.lib();
    let r = env.json(&["backup", lib.to_str().unwrap()], 0);
    assert_eq!(r[0]["staged_files"], 4, "{r}");
    let files = files_under(&lib);
    let changed = lib.join(files.iter().find(|f| f.ends_with("IMG_0001.jpg")).unwrap());
    let gone = lib.join(files.iter().find(|f| f.ends_with("IMG_0003.jpg")).unwrap());
    let unreadable = lib.join(files.iter().find(|f| f.ends_with("IMG_0000.jpg")).unwrap());
    let old = std::fs::read(&changed).unwrap();
    let old_gone = std::fs::read(&gone).unwrap();
    let old_unreadable = std::fs::read(&unreadable).unwrap();
    std::fs::write(&changed, b"new bytes, not scanned yet").unwrap();
    std::fs::remove_file(&gone).unwrap();
    // A link to itself: opening it fails (ELOOP), and not with "not found" (even as root).
    std::fs::remove_file(&unreadable).unwrap();
    std::os::unix::fs::symlink(unreadable.file_name().unwrap(), &unreadable).unwrap();

    let r = env.json(&["sync", "--site", "local", "--pack-now"], 0);
    assert_eq!(r[0]["ok"], true, "{r}");
    assert_eq!(r[0]["archived_files"], 4, "{r}");
    assert_eq!(r[0]["skipped_changed"], 0, "{r}");
    let archive = data_dir(&env).join("local/archive");
    let image = files_under(&archive)
        .into_iter()
        .find(|f| f.ends_with(".iso"))
        .unwrap();
    let out_dir = env.path().join("extracted");
    let out = env
        .cmd()
        .args(["iso", "extract", "--to"])
        .arg(&out_dir)
        .arg(archive.join(&image))
        .output()
        .unwrap();
    assert_code(&out, 0);
    let extracted = files_under(&out_dir);
    let find = |name: &str| {
        std::fs::read(
            out_dir.join(
                extracted
                    .iter()
                    .find(|f| f.ends_with(name))
                    .unwrap_or_else(|| panic!("{name} in {extracted:?}")),
            ),
        )
        .unwrap()
    };
    assert_eq!(
        find("IMG_0001.jpg"),
        old,
        "the scanned version, from its staged copy"
    );
    assert_eq!(find("IMG_0003.jpg"), old_gone);
    assert_eq!(find("IMG_0000.jpg"), old_unreadable);
    // No temporary copies left behind.
    assert!(files_under(&data_dir(&env).join("tmp")).is_empty());
}

/// By default a staged copy of a file deleted locally is archived like any other; with
/// `stage-retention-days` it is removed from the stage once the file has been gone that long,
/// and never archived. Nothing archived is touched.
#[test]
fn stage_retention_frees_copies_of_deleted_files_only_when_asked() {
    let env = Env::new();
    library(&env, 3, 20_000);
    let root = env.path().display().to_string();
    let cfg = env.config(&format!(
        r#"
[library]
roots = ["{root}/lib"]

[sites.keep]
stage = {{ kind = "fs", root = "{root}/keep-stage" }}
archive = {{ kind = "fs", root = "{root}/keep-archive" }}

[sites.trim]
stage-retention-days = 7
stage = {{ kind = "fs", root = "{root}/trim-stage" }}
archive = {{ kind = "fs", root = "{root}/trim-archive" }}
"#
    ));
    let r = env.json(&["--config", &cfg, "backup"], 0);
    for s in r.as_array().unwrap() {
        assert_eq!(s["staged_files"], 3, "{r}");
    }
    let lib = env.lib();
    let victim = files_under(&lib)
        .into_iter()
        .find(|f| f.ends_with("IMG_0001.jpg"))
        .unwrap();
    std::fs::remove_file(lib.join(&victim)).unwrap();
    // And an edit: the staged older version is gone locally too.
    let edited = files_under(&lib)
        .into_iter()
        .find(|f| f.ends_with("IMG_0002.jpg"))
        .unwrap();
    std::fs::write(lib.join(&edited), b"edited since").unwrap();
    // The rescan records both; eight days pass (the manifest is moved back in time through
    // an export and an import, which keeps its id); the dry run shows what would expire.
    env.json(&["--config", &cfg, "scan"], 0);
    age_manifest(&env, &cfg, 8 * 86_400);
    let dry = env.json(&["--config", &cfg, "sync", "--all", "--dry-run"], 0);
    let by = site;
    assert_eq!(by(&dry, "trim")["expired_files"], 2, "{dry}");
    assert_eq!(by(&dry, "keep")["expired_files"], 0, "{dry}");
    let staged = |site: &str| {
        files_under(&env.path().join(format!("{site}-stage")))
            .into_iter()
            .filter(|f| f.starts_with("stage/"))
            .count()
    };
    assert_eq!(staged("trim"), 3, "a dry run removes nothing");

    let r = env.json(&["--config", &cfg, "sync", "--all", "--pack-now"], 0);
    // trim: the untouched file and the edited file's new version; keep: those, plus the
    // deleted file and the older version, from their staged copies.
    assert_eq!(by(&r, "trim")["expired_files"], 2, "{r}");
    assert_eq!(by(&r, "trim")["archived_files"], 2, "{r}");
    assert_eq!(by(&r, "keep")["expired_files"], 0, "{r}");
    assert_eq!(
        by(&r, "keep")["archived_files"],
        4,
        "kept, and archived: {r}"
    );
    assert_eq!(staged("trim"), 0);
    assert_eq!(staged("keep"), 0);
    // Nothing is left waiting, and the next run does not stage it again.
    let r = env.json(&["--config", &cfg, "sync", "--all"], 0);
    assert_eq!(by(&r, "trim")["staged_files"], 0, "{r}");
    assert_eq!(by(&r, "trim")["pending_bytes"], 0, "{r}");
}

/// A file touched (new mtime, same bytes) between its scan and its first stage is staged,
/// not skipped as changed by every later sync.
#[test]
fn a_file_touched_before_its_first_stage_is_staged() {
    let env = Env::new();
    let p = env.write("a.jpg", b"same bytes");
    set_mtime(&p, 1_600_000_000);
    env.scan();
    set_mtime(&p, 1_700_000_000);
    let scan = env.scan();
    assert_eq!(
        (&scan["touched"], &scan["changed"]),
        (&1.into(), &0.into()),
        "{scan}"
    );
    let r = env.json(&["sync", "--site", "local"], 0);
    assert_eq!(r[0]["staged_files"], 1, "{r}");
    assert_eq!(r[0]["skipped_changed"], 0, "{r}");
}

/// On a local disk every object is durable before it counts: its bytes fsynced, then (after
/// the rename into place, for images and catalogs) its folder fsynced, so a power cut never
/// leaves a recorded object that is not on the disk. Seen in the system calls (strace -y).
#[test]
fn local_disk_writes_are_fsynced_file_then_folder() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("LOMOB_REQUIRE_SERVICES").is_none(),
            "strace is required (apt-get install strace)"
        );
        return;
    }
    let env = Env::new();
    let root = env.path().display().to_string();
    let cfg = env.config(&format!(
        "[library]\nroots = [\"{root}/lib\"]\n[sites.nas]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n"
    ));
    // Above 64 KiB: copied past the page cache (smaller files go through it).
    env.write("a.jpg", &[1u8; 100_000]);
    env.write("b.jpg", &[2u8; 120_000]);
    let trace = env.path().join("trace");
    let run = |cfg: &str, args: &[&str]| {
        let lomob = assert_cmd::cargo::cargo_bin("lomob");
        let mut all = vec![
            "-f".to_string(),
            "-y".into(),
            "-e".into(),
            "trace=fsync,syncfs,rename,renameat,renameat2,openat".into(),
            "-o".into(),
            trace.to_str().unwrap().into(),
            lomob.to_str().unwrap().into(),
            "--config".into(),
            cfg.to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        // strace runs lomob with the test's environment (its own home, no LOMOB_ leaking).
        let mut strace = std::process::Command::new("strace");
        strace.args(&all).current_dir(env.path());
        for (k, v) in env.std_cmd().get_envs() {
            match v {
                Some(v) => strace.env(k, v),
                None => strace.env_remove(k),
            };
        }
        let out = strace.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&trace).unwrap()
    };
    // Staged copies: written under a .partial name (O_DIRECT) and renamed into place; then
    // one syncfs makes them all durable (data and names) before the manifest records them
    // and is itself made durable.
    let log = run(&cfg, &["backup"]);
    let lines: Vec<&str> = log.lines().collect();
    let staged_dir = format!("{root}/stage/stage/");
    // Distinct files: under load strace splits a call into "unfinished" and "resumed"
    // lines, and the first open of each run meets a missing folder and is repeated.
    let opened_direct: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|l| l.contains("openat(") && l.contains("O_DIRECT"))
        .filter_map(|l| {
            let at = l.find(&staged_dir)?;
            let name = &l[at..];
            Some(&name[..name.find(".partial\"")?])
        })
        .collect();
    assert_eq!(opened_direct.len(), 2, "{log}");
    let renames: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.contains("rename") && l.contains(&staged_dir) && l.contains(".partial\", ")
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(renames.len(), 2, "{log}");
    let settled = lines[renames[1]..]
        .iter()
        .position(|l| l.contains("syncfs(") && l.contains(&format!("<{root}/stage>")))
        .map(|p| p + renames[1])
        .unwrap_or_else(|| panic!("no syncfs of the stage after the copies:\n{log}"));
    assert!(
        lines[settled..]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains("lomob.db")),
        "the manifest was not made durable after the stage:\n{log}"
    );
    let left: Vec<_> = std::fs::read_dir(env.path().join("stage/stage"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.len() == 2 && left.iter().all(|n| !n.ends_with(".partial")),
        "{left:?}"
    );
    // The image: its .partial fsynced, renamed into place, then the folder fsynced.
    let log = run(&cfg, &["sync", "--site", "nas", "--pack-now"]);
    let lines: Vec<&str> = log.lines().collect();
    let archive_dir = format!("<{root}/archive/archive>");
    let rename = lines
        .iter()
        .position(|l| {
            l.contains("rename") && l.contains(".iso.partial\", ") && !l.contains("catalog")
        })
        .unwrap_or_else(|| panic!("no rename of the image into place:\n{log}"));
    assert!(
        lines[..rename]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains(".iso.partial>")),
        "the image was not fsynced before its rename:\n{log}"
    );
    assert!(
        lines[rename..]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains(&archive_dir)),
        "no fsync of the archive folder after the rename:\n{log}"
    );
    // Written whole by this run, hashed as written and fsynced: not read back (that would
    // read the page cache the write just filled).
    let read_back = |lines: &[&str]| {
        lines
            .iter()
            .filter(|l| {
                l.contains("openat(") && l.contains(".iso.partial\"") && l.contains("O_RDONLY")
            })
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
    };
    assert!(read_back(&lines).is_empty(), "read back:\n{log}");
    // With verify-read-back, it is read from the disk itself (O_DIRECT).
    env.write("c.jpg", &[3u8; 70_000]);
    let cfg = env.config_named(
        "verify.toml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("/archive\" }", "/archive\", verify-read-back = true }"),
    );
    run(&cfg, &["backup"]);
    let log = run(&cfg, &["sync", "--site", "nas", "--pack-now"]);
    let lines: Vec<&str> = log.lines().collect();
    let reads = read_back(&lines);
    assert!(
        reads.iter().any(|l| l.contains("O_DIRECT")),
        "no O_DIRECT read-back:\n{log}"
    );
}

/// Found by the chaos suite (#15): an upload cut short (or a kill between an upload and its
/// record) leaves an object under its final stage name; when the next run packs that
/// content straight from its original into an image, nothing ever replaces the object and
/// it was billed for good. A run after one that failed or was killed now sweeps lomob's
/// unrecorded stage objects, once; after a clean run nothing is listed or touched.
#[test]
fn a_run_after_an_interrupted_one_removes_the_stage_objects_it_left() {
    use crate::support::cloud::cloud;
    use crate::support::http_proxy::{Action, Rule};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let env = Env::new();
    let refuse = Arc::new(AtomicBool::new(true));
    let r2 = refuse.clone();
    let rule: Arc<Rule> = Arc::new(move |s| {
        if r2.load(Ordering::SeqCst) && s.method == "PUT" && s.target.contains(".iso") {
            Action::Refuse(500, "InternalError")
        } else {
            Action::Forward
        }
    });
    let Some(c) = cloud(&env, rule, "") else {
        return;
    };
    library(&env, 3, 50_000);
    let cfg = env.config_named(
        "fast.toml",
        &format!(
            "{}[sites.cloud.transfer]\nretries = 0\n",
            std::fs::read_to_string(&c.cfg).unwrap()
        ),
    );
    // The archive refuses the image: the packing run fails.
    let out = env
        .cmd()
        .args(["--config", &cfg, "backup", "--pack-now", "--json"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    // What an upload cut short would have left: a stage object under lomob's name.
    let stage = s3_client(
        &c.endpoint,
        "k",
        "s",
        &c.stage_bucket,
        lomob_backends::StorageClass::Standard,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let left = "stage/0123456789abcdef0123456789abcdef";
    rt.block_on(stage.put_object(left, vec![7u8; 1000], &[]))
        .unwrap();
    refuse.store(false, Ordering::SeqCst);
    let r = env.json(
        &["--config", &cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["garbage_removed"], 1, "{r}");
    assert!(rt.block_on(stage.head_object(left)).is_err(), "{r}");
    let check = env.json(
        &["--config", &cfg, "check", "--site", "cloud", "--stage"],
        0,
    );
    assert!(
        check["sites"][0]["parts"][0]["findings"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{check}"
    );
    // After a clean run, the stage is not swept (no LIST on every run): a stray object is
    // for `check` to report.
    rt.block_on(stage.put_object(left, vec![7u8; 1000], &[]))
        .unwrap();
    let r = env.json(&["--config", &cfg, "sync", "--site", "cloud"], 0);
    assert_eq!(r[0]["garbage_removed"], 0, "{r}");
    assert!(rt.block_on(stage.head_object(left)).is_ok());
}

/// `status` reads totals every write keeps; after scans with changes and deletions, syncs
/// that stage, pack and free, and an import into a fresh manifest, they equal a recount
/// from the records, and the imported manifest shows the same totals.
#[test]
fn status_totals_are_kept_by_every_write_and_agree_with_a_recount() {
    let env = Env::new();
    library(&env, 12, 400_000);
    // Two paths with one content: one content, counted once as not yet safe.
    env.write("2025/copy-a.bin", b"same bytes");
    env.write("2025/copy-b.bin", b"same bytes");
    let root = env.path().display().to_string();
    let cfg = env.config(&format!(
        r#"
[library]
roots = ["{root}/lib"]

[sites.nas]
pack-threshold = "3MB"
iso-size = "2MB"
stage = {{ kind = "fs", root = "{root}/nas-stage" }}
archive = {{ kind = "fs", root = "{root}/nas-archive" }}
"#
    ));
    let status = |db: Option<&str>| {
        let mut args = vec!["--config", &cfg];
        if let Some(d) = db {
            args.extend(["--db", d]);
        }
        args.push("status");
        env.json(&args, 0)
    };
    let recount_is_clean = |db: Option<&str>| {
        let mut args = vec!["--config", &cfg];
        if let Some(d) = db {
            args.extend(["--db", d]);
        }
        args.extend(["status", "--recount"]);
        let v = env.json(&args, 0);
        assert_eq!(v["recount"]["drift"], serde_json::json!([]), "{v}");
    };
    env.scan();
    let s = status(None);
    assert_eq!(s["present"]["files"], 14, "{s}");
    assert_eq!(s["contents"]["files"], 13, "{s}");
    assert_eq!(s["sites"][0]["not_yet_safe"]["files"], 13, "{s}");
    recount_is_clean(None);

    env.json(&["--config", &cfg, "backup"], 0);
    std::fs::remove_file(env.lib().join("2025/copy-b.bin")).unwrap();
    let changed = env.write("2025/copy-a.bin", b"other bytes now");
    set_mtime(&changed, 1_900_000_000);
    for i in 0..6 {
        env.write(&format!("2026/new_{i}.bin"), &vec![i as u8 + 9; 400_000]);
    }
    env.json(&["--config", &cfg, "backup"], 0);
    let s = status(None);
    let site = &s["sites"][0];
    assert_eq!(s["present"]["files"], 19, "{s}");
    assert_eq!(s["deleted"]["files"], 1, "{s}");
    assert_eq!(s["versions"]["files"], 21, "{s}");
    assert_eq!(site["not_yet_safe"]["files"], 0, "{s}");
    let held = site["staged"]["files"].as_u64().unwrap()
        + site["waiting_to_free"]["files"].as_u64().unwrap();
    assert_eq!(
        held,
        files_under(&env.path().join("nas-stage"))
            .iter()
            .filter(|f| f.starts_with("stage/"))
            .count() as u64,
        "{s}"
    );
    assert!(site["archived"]["files"].as_u64().unwrap() > 0, "{s}");
    recount_is_clean(None);

    let export = env.path().join("m.jsonl");
    let other = env.path().join("other.db");
    let other = other.to_str().unwrap();
    env.cmd()
        .args(["manifest", "export", export.to_str().unwrap()])
        .assert()
        .success();
    env.json(
        &[
            "--db",
            other,
            "manifest",
            "import",
            export.to_str().unwrap(),
        ],
        0,
    );
    let t = status(Some(other));
    for k in ["present", "deleted", "versions", "contents"] {
        assert_eq!(s[k], t[k], "{k}: {s} / {t}");
    }
    for k in ["staged", "archived", "not_yet_safe", "waiting_to_free"] {
        assert_eq!(s["sites"][0][k], t["sites"][0][k], "{k}: {s} / {t}");
    }
    recount_is_clean(Some(other));

    // The import holds exactly what was exported, every kind of record (files, contents,
    // staged and archived copies, placements, images, runs): exported again, the same lines.
    let again = env.path().join("again.jsonl");
    env.cmd()
        .args(["--db", other, "manifest", "export", again.to_str().unwrap()])
        .assert()
        .success();
    let (first, second) = (
        crate::support::export_body(&export),
        crate::support::export_body(&again),
    );
    for kind in [
        "file",
        "content",
        "staged",
        "archived",
        "placement",
        "iso",
        "run",
    ] {
        let tag = format!("{{\"{kind}\":");
        assert!(
            first.iter().any(|l| l.starts_with(&tag)),
            "the export holds no {kind} line"
        );
    }
    assert_eq!(first, second);
}

/// OpenDAL's WebDAV writer is one-shot: an image larger than one 8 MiB write failed
/// ("OneShotWriter doesn't support multiple write"), so a WebDAV archive never took a
/// default-sized image. Images now go up as one streamed PUT of lomob's own: a refusal and
/// a stalled server fail the run with nothing recorded, and the next run stores the image
/// (one PUT), reads it back, and restores it byte for byte.
#[test]
fn a_webdav_archive_takes_an_image_larger_than_one_write() {
    use crate::support::http_proxy::{Action, HttpProxy};
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    let Some(ep) = service_var("LOMOB_TEST_WEBDAV_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    library(&env, 3, 7_000_000);
    // 0: refuse the image's PUT with 507, 1: never answer it, 2: forward.
    let mode = Arc::new(AtomicU8::new(0));
    let m = mode.clone();
    let proxy = HttpProxy::start(
        &ep,
        Arc::new(move |r| {
            if r.method == "PUT" && r.target.contains(".iso.partial") {
                match m.load(Ordering::SeqCst) {
                    0 => Action::Refuse(507, "InsufficientStorage"),
                    1 => Action::Stall,
                    _ => Action::Forward,
                }
            } else {
                Action::Forward
            }
        }),
    );
    let root = env.path().display().to_string();
    let cfg = env.config(&format!(
        "[library]\nroots = [\"{root}/lib\"]\n[sites.dav]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"webdav\", endpoint = \"{}\", root = \"/{}\" }}\n[sites.dav.transfer]\nretries = 0\ntimeout-secs = 2\n",
        proxy.endpoint(),
        unique(&env)
    ));
    env.json(&["--config", &cfg, "scan"], 0);
    let r = env.json(
        &["--config", &cfg, "sync", "--site", "dav", "--pack-now"],
        1,
    );
    assert_eq!(r[0]["archived_files"], 0, "{r}");
    assert!(
        r[0]["errors"].to_string().contains("HTTP 507"),
        "the server's answer is named: {r}"
    );
    mode.store(1, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let r = env.json(
        &["--config", &cfg, "sync", "--site", "dav", "--pack-now"],
        5,
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "a stalled server is given up on"
    );
    assert!(r[0]["errors"].to_string().contains("no progress"), "{r}");
    assert_eq!(r[0]["archived_files"], 0, "{r}");
    mode.store(2, Ordering::SeqCst);
    let before = proxy.traffic.log.lock().unwrap().len();
    let r = env.json(
        &["--config", &cfg, "sync", "--site", "dav", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["archived_files"], 3, "{r}");
    let puts = proxy.traffic.log.lock().unwrap()[before..]
        .iter()
        .filter(|l| l.starts_with("PUT") && l.contains(".iso.partial") && !l.contains("catalog"))
        .count();
    assert_eq!(puts, 1, "one streamed PUT for the image");
    let out = env.path().join("restored");
    env.json(
        &["--config", &cfg, "restore", "--to", out.to_str().unwrap()],
        0,
    );
    let restored = files_under(&out);
    assert_eq!(restored.len(), 3, "{restored:?}");
    for rel in files_under(&env.path().join("lib")) {
        let name = std::path::Path::new(&rel).file_name().unwrap().to_owned();
        let got = restored
            .iter()
            .find(|r| std::path::Path::new(r).file_name() == Some(&name))
            .unwrap_or_else(|| panic!("{rel} not restored: {restored:?}"));
        assert!(
            std::fs::read(out.join(got)).unwrap()
                == std::fs::read(env.path().join("lib").join(&rel)).unwrap(),
            "{rel}"
        );
    }
}

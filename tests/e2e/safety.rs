//! Regression tests for the safety issue: each test is named after the item it closes and
//! drives the real binary against real servers (moto, sshd) or the local disk. Each one
//! failed on the code the issue was filed against.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::{
    assert_code, files_under, service_var, set_mtime, stderr, unique, Bucket, Env,
};

fn library(env: &Env, n: usize, size: usize) {
    for i in 0..n {
        let data: Vec<u8> = (0..size)
            .map(|x| ((x as u64 * 2654435761 + i as u64 * 97) >> 7) as u8)
            .collect();
        let p = env.write(&format!("{:02}/IMG_{i:05}.jpg", i % 3), &data);
        set_mtime(&p, 1_600_000_000 + i as i64 * 3_600);
    }
}

/// A glacier archive on moto and a local stage, for site `cold`.
fn cold_site(env: &Env, ep: &str, bucket: &str, stage: &str, extra: &str) -> String {
    let root = env.path().display();
    format!(
        "[library]\nroots = [\"{root}/lib\"]\n[sites.cold]\nstage = {{ kind = \"fs\", root = \"{root}/{stage}\" }}\narchive = {{ kind = \"glacier\", bucket = \"{bucket}\", endpoint = \"{ep}\", access-key-id = \"k\", secret-access-key = \"s\"{extra} }}\n"
    )
}

/// Runs `lomob ARGS --json` with the manifest in `db`.
fn json_db(env: &Env, db: &Path, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["--db", db.to_str().unwrap()];
    all.extend_from_slice(args);
    env.json(&all, code)
}

fn kill9(child: &mut std::process::Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Item 2: an object under the image's name with the same size and fingerprint metadata
/// but other bytes was taken as the archived image. Now only a checksum the server computed
/// (or a read-back) counts; the impostor is kept on record as unverified and billed, and the
/// image goes up under a new name.
#[test]
fn item2_garbage_under_the_image_name_is_never_accepted_as_archived() {
    let env = Env::new();
    library(&env, 5, 200_000);
    let root = env.path().display().to_string();
    let moto = service_var("LOMOB_TEST_MOTO_ENDPOINT");
    // Where the same image is made first, with another manifest, to learn its name, size
    // and fingerprint as an impostor would.
    let scratch = env.path().join("scratch-db");

    // A local-disk archive: the impostor has the image's size.
    let fs_cfg = |archive: &str, stage: &str| {
        format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.cold]\nstage = {{ kind = \"fs\", root = \"{root}/{stage}\" }}\narchive = {{ kind = \"fs\", root = \"{root}/{archive}\" }}\n"
        )
    };
    let c = env.config_named(
        "scratch-fs.toml",
        &fs_cfg("scratch-archive", "scratch-stage"),
    );
    json_db(&env, &scratch, &["--config", &c, "scan"], 0);
    let r = json_db(
        &env,
        &scratch,
        &["--config", &c, "sync", "--site", "cold", "--pack-now"],
        0,
    );
    let name = r[0]["images"][0].as_str().unwrap().to_string();
    let size = std::fs::metadata(env.path().join("scratch-archive/archive").join(&name))
        .unwrap()
        .len();
    let impostor = env.path().join("archive/archive").join(&name);
    std::fs::create_dir_all(impostor.parent().unwrap()).unwrap();
    std::fs::write(&impostor, vec![0x5a; size as usize]).unwrap();
    let c = env.config_named("fs.toml", &fs_cfg("archive", "stage"));
    env.json(&["--config", &c, "scan"], 0);
    let r = env.json(&["--config", &c, "sync", "--site", "cold", "--pack-now"], 0);
    assert_eq!(r[0]["archived_files"], 5, "{r}");
    assert_eq!(
        r[0]["unverified_objects"][0],
        format!("archive/{name}"),
        "{r}"
    );
    let taken_by_image = r[0]["images"][0].as_str().unwrap();
    assert_ne!(taken_by_image, name, "{r}");
    assert_eq!(
        std::fs::read(&impostor).unwrap(),
        vec![0x5a; size as usize],
        "never overwritten"
    );

    let Some(ep) = moto else {
        return;
    };
    // S3 with Deep Archive: the impostor has the image's size and its fingerprint metadata.
    let tag = unique(&env);
    let scratch_bucket = Bucket::new(&ep, &format!("scratch-{tag}"));
    let bucket = Bucket::new(&ep, &format!("garbage-{tag}"));
    let scratch = env.path().join("scratch-db-s3");
    let c = env.config_named(
        "scratch-s3.toml",
        &cold_site(&env, &ep, &format!("scratch-{tag}"), "scratch-s3-stage", ""),
    );
    json_db(&env, &scratch, &["--config", &c, "scan"], 0);
    let r = json_db(
        &env,
        &scratch,
        &["--config", &c, "sync", "--site", "cold", "--pack-now"],
        0,
    );
    let name = r[0]["images"][0].as_str().unwrap().to_string();
    let key = format!("archive/{name}");
    let real = scratch_bucket
        .rt
        .block_on(scratch_bucket.client.head_object(&key))
        .unwrap();
    let fingerprint = real.metadata["fingerprint"].clone();
    bucket
        .rt
        .block_on(bucket.client.put_object(
            &key,
            vec![0x5a; real.size as usize],
            &[("fingerprint".into(), fingerprint)],
        ))
        .unwrap();
    let db = env.path().join("db-s3");
    let c = env.config_named(
        "s3.toml",
        &cold_site(&env, &ep, &format!("garbage-{tag}"), "s3-stage", ""),
    );
    json_db(&env, &db, &["--config", &c, "scan"], 0);
    let r = json_db(
        &env,
        &db,
        &["--config", &c, "sync", "--site", "cold", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["ok"], true, "{r}");
    assert_eq!(r[0]["archived_files"], 5, "{r}");
    assert_eq!(r[0]["unverified_objects"][0], key, "{r}");
    assert_ne!(r[0]["images"][0], name.as_str(), "{r}");
    // The impostor is on record, with its size, and counted in the cost.
    let st = json_db(&env, &db, &["--config", &c, "status"], 0);
    assert_eq!(st["sites"][0]["unverified_objects"]["files"], 1, "{st}");
    assert_eq!(
        st["sites"][0]["unverified_objects"]["bytes"], real.size,
        "{st}"
    );
    let cost = json_db(&env, &db, &["--config", &c, "cost"], 0);
    assert_eq!(cost[0]["unverified_objects"], 1, "{cost}");
    // And it was never overwritten.
    let now = bucket.rt.block_on(bucket.client.head_object(&key)).unwrap();
    assert_eq!(now.etag, real_etag_of(&vec![0x5a; real.size as usize]));
}

fn real_etag_of(bytes: &[u8]) -> String {
    use md5::Digest;
    format!("\"{}\"", hex::encode(md5::Md5::digest(bytes)))
}

/// Starts lomob and returns once it logs that it is archiving.
fn spawn_until_archiving(env: &Env, args: &[&str]) -> std::process::Child {
    let mut child = env
        .std_cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines();
    let archiving = lines
        .by_ref()
        .any(|l| l.unwrap_or_default().contains("archiving"));
    assert!(archiving, "the run never reached the archive step");
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// Item 3: a journaled multipart upload of an image the next run plans differently (a file
/// of it changed) stayed open and billed. Now every upload no run will continue is aborted.
#[test]
fn item3_an_upload_no_run_will_continue_is_aborted() {
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    library(&env, 6, 5_000_000); // 30 MB in 5 MiB parts, paced at 10 MB/s
    let name = format!("abandon-{}", unique(&env));
    let bucket = Bucket::new(&ep, &name);
    let c = env.config_named(
        "c.toml",
        &(cold_site(
            &env,
            &ep,
            &name,
            "stage",
            ", part-size = \"5MiB\", single-put-max = \"0\"",
        ) + "[sites.cold.transfer]\nconcurrency = 1\nbandwidth-limit = \"10MB\"\n"),
    );
    env.json(&["--config", &c, "scan"], 0);
    let mut child = spawn_until_archiving(
        &env,
        &["--config", &c, "sync", "--site", "cold", "--pack-now"],
    );
    // Kill once a part of the image is on the server.
    let parts = bucket.wait_for_parts(&mut child, 1);
    kill9(&mut child);
    assert!(parts > 0, "the upload never started a part before the kill");
    assert_eq!(bucket.open_uploads().len(), 1);

    // A file of that image changes: the image can never be laid out again.
    let edited = env.lib().join("01/IMG_00001.jpg");
    std::fs::write(&edited, vec![7u8; 4_000_000]).unwrap();
    set_mtime(&edited, 1_700_000_000);
    env.json(&["--config", &c, "scan"], 0);
    let r = env.json(&["--config", &c, "sync", "--site", "cold", "--pack-now"], 0);
    assert_eq!(r[0]["ok"], true, "{r}");
    assert_eq!(r[0]["uploads_abandoned"], 1, "{r}");
    assert_eq!(r[0]["archived_files"], 6, "{r}");
    assert!(
        bucket.open_uploads().is_empty(),
        "left billing: {:?}",
        bucket.open_uploads()
    );
    let st = env.json(&["--config", &c, "status"], 0);
    assert_eq!(st["sites"][0]["interrupted_images"], 0, "{st}");
}

/// Item 4: orphan cleanup aborted another tool's multipart upload and deleted a family
/// file named `*.partial`. Now only the site's own image keys under `archive/` are touched.
#[test]
fn item4_cleanup_touches_only_the_sites_own_keys() {
    let env = Env::new();
    library(&env, 2, 10_000);
    let root = env.path().display().to_string();
    // Another program's files in the archive folder of a local site.
    let nas = env.path().join("nas");
    for f in [
        "family/tax-return.pdf.partial",
        "archive/other-2020-01-01--2020-01-02.iso.partial",
        "archive/nasx-2020-01-01--2020-01-02.iso.partial",
    ] {
        std::fs::create_dir_all(nas.join(f).parent().unwrap()).unwrap();
        std::fs::write(nas.join(f), b"not lomob's").unwrap();
    }
    // And a genuine orphan of this site (an upload a crash left before it was journaled).
    std::fs::write(
        nas.join("archive/nas-2020-01-01--2020-01-02.iso.partial"),
        b"ours",
    )
    .unwrap();
    let mut text = format!(
        "[library]\nroots = [\"{root}/lib\"]\n[sites.nas]\nstage = {{ kind = \"fs\", root = \"{root}/nas-stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/nas\" }}\n"
    );
    let moto = service_var("LOMOB_TEST_MOTO_ENDPOINT");
    let bucket = moto.as_ref().map(|ep| {
        let name = format!("cleanup-{}", unique(&env));
        let b = Bucket::new(ep, &name);
        for key in [
            "restic/data/00/abcdef",
            "archive/other-2020-01-01--2020-01-02.iso",
            "archive/cold-2020-01-01--2020-01-02.iso",
        ] {
            b.rt
                .block_on(b.client.create_multipart_upload(key, &[]))
                .unwrap();
        }
        text.push_str(&format!(
            "[sites.cold]\nstage = {{ kind = \"fs\", root = \"{root}/cold-stage\" }}\narchive = {{ kind = \"glacier\", bucket = \"{name}\", endpoint = \"{}\", access-key-id = \"k\", secret-access-key = \"s\" }}\n",
            moto.as_ref().unwrap()
        ));
        b
    });
    let c = env.config_named("c.toml", &text);
    env.json(&["--config", &c, "scan"], 0);
    let r = env.json(&["--config", &c, "sync", "--all"], 0);
    let nas_report = r
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == "nas")
        .unwrap();
    assert_eq!(nas_report["orphans_aborted"], 1, "{r}");
    let left = files_under(&nas);
    for f in [
        "family/tax-return.pdf.partial",
        "archive/other-2020-01-01--2020-01-02.iso.partial",
        "archive/nasx-2020-01-01--2020-01-02.iso.partial",
    ] {
        assert!(left.contains(&f.to_string()), "{f} was touched: {left:?}");
    }
    assert!(!left.contains(&"archive/nas-2020-01-01--2020-01-02.iso.partial".to_string()));
    if let Some(b) = bucket {
        let cold = r
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == "cold")
            .unwrap();
        assert_eq!(cold["orphans_aborted"], 1, "{r}");
        let mut open = b.open_uploads();
        open.sort();
        assert_eq!(
            open,
            [
                "archive/other-2020-01-01--2020-01-02.iso",
                "restic/data/00/abcdef"
            ]
        );
    }
}

/// Item 5: an image stored by a run that died before recording it, then a file of it
/// changed: every later run failed with "a different object already exists" and the orphan
/// was billed for 180 days. Now a stored and verified image is adopted (its files recorded
/// as archived there, the changed file's new version goes into a new image), and an image
/// that cannot be verified any more is kept on record while its files take a new name.
#[test]
fn item5_an_image_stored_but_not_recorded_is_adopted_never_a_permanent_refusal() {
    let env = Env::new();
    library(&env, 5, 100_000);
    let root = env.path().display().to_string();
    let c = env.config_named("c.toml",
        &format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.nas]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n"
        ),
    );
    env.json(&["--config", &c, "scan"], 0);
    let dry = env.json(
        &[
            "--config",
            &c,
            "sync",
            "--site",
            "nas",
            "--pack-now",
            "--dry-run",
        ],
        0,
    );
    let name = dry[0]["images"][0].as_str().unwrap().to_string();
    // The run dies after the image is stored and verified, before it is recorded: here its
    // catalog cannot be written (a folder holds the catalog's temporary name).
    let blocker = env
        .path()
        .join(format!("archive/archive/{name}.catalog.json.partial"));
    std::fs::create_dir_all(&blocker).unwrap();
    let r = env.json(&["--config", &c, "sync", "--site", "nas", "--pack-now"], 1);
    assert_eq!(r[0]["images"].as_array().unwrap().len(), 0, "{r}");
    assert!(env.path().join("archive/archive").join(&name).exists());
    std::fs::remove_dir(&blocker).unwrap();
    // A file of that image changes.
    let edited = env.lib().join("01/IMG_00001.jpg");
    std::fs::write(&edited, b"edited after the crash").unwrap();
    set_mtime(&edited, 1_700_000_000);
    env.json(&["--config", &c, "scan"], 0);
    let r = env.json(&["--config", &c, "sync", "--site", "nas", "--pack-now"], 0);
    assert_eq!(r[0]["adopted_images"][0], name.as_str(), "{r}");
    assert_eq!(r[0]["images"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(
        r[0]["archived_files"], 6,
        "five adopted, the new version in a new image: {r}"
    );
    assert!(env
        .path()
        .join(format!("archive/archive/{name}.catalog.json"))
        .exists());
    let st = env.json(&["--config", &c, "status"], 0);
    assert_eq!(st["sites"][0]["not_yet_safe"]["files"], 0, "{st}");
    assert_eq!(st["sites"][0]["unverified_objects"]["files"], 0, "{st}");

    // The same crash, but nothing of the pending image survived (a manifest restored from
    // an export taken before the run): the stored image is verified by its bytes if it can
    // be laid out again, else recorded as unverified; either way the run goes on.
    let env = Env::new();
    library(&env, 5, 100_000);
    let root = env.path().display().to_string();
    let c = env.config_named("c.toml",
        &format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.nas]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n"
        ),
    );
    env.json(&["--config", &c, "scan"], 0);
    let before = env.path().join("before.jsonl");
    env.cmd()
        .args(["--config", &c, "manifest", "export"])
        .arg(&before)
        .assert()
        .success();
    let r = env.json(&["--config", &c, "sync", "--site", "nas", "--pack-now"], 0);
    let name = r[0]["images"][0].as_str().unwrap().to_string();
    let restored = |db: &str| {
        let db = env.path().join(db);
        env.cmd()
            .args([
                "--config",
                &c,
                "--db",
                db.to_str().unwrap(),
                "manifest",
                "import",
            ])
            .arg(&before)
            .assert()
            .success();
        db
    };
    // Unchanged files: the object is shown to hold the image's bytes and is recorded.
    let db = restored("db-a");
    let r = json_db(
        &env,
        &db,
        &["--config", &c, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["images"][0], name.as_str(), "{r}");
    assert_eq!(
        r[0]["unverified_objects"].as_array().unwrap().len(),
        0,
        "{r}"
    );
    // A changed file: the object cannot be shown to be the new image; it is kept on record
    // and the image takes another name.
    let db = restored("db-b");
    let edited = env.lib().join("01/IMG_00001.jpg");
    std::fs::write(&edited, b"edited").unwrap();
    set_mtime(&edited, 1_600_000_000 + 3_600);
    json_db(&env, &db, &["--config", &c, "scan"], 0);
    let r = json_db(
        &env,
        &db,
        &["--config", &c, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["ok"], true, "{r}");
    assert_eq!(
        r[0]["unverified_objects"][0],
        format!("archive/{name}"),
        "{r}"
    );
    assert_eq!(r[0]["archived_files"], 5, "{r}");
    let r = json_db(
        &env,
        &db,
        &["--config", &c, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["ok"], true, "and the next run too: {r}");
}

/// Item 6: staged copies of archived contents were freed only by the run that archived
/// them; a failed delete left them forever. Now every run frees them, and `status` shows
/// those still waiting.
#[test]
fn item6_staged_copies_of_archived_files_are_freed_by_any_later_run() {
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
    library(&env, 4, 30_000);
    let root = env.path().display().to_string();
    let tag = unique(&env);
    let stage_root = format!("{home}/{tag}");
    let c = env.config_named("c.toml",
        &format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.parents]\nstage = {{ kind = \"sftp\", host = \"{host}:{port}\", user = \"{user}\", key = \"{key}\", root = \"{stage_root}\", known-hosts = \"accept\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n"
        ),
    );
    let r = env.json(&["--config", &c, "backup"], 0);
    assert_eq!(r[0]["staged_files"], 4, "{r}");
    // The relative's machine refuses deletes for a while (its folder is read-only).
    let stage_dir = PathBuf::from(&stage_root).join("stage");
    let chmod = |mode: &str| {
        assert!(std::process::Command::new("chmod")
            .arg(mode)
            .arg(&stage_dir)
            .status()
            .unwrap()
            .success());
    };
    chmod("555");
    let r = env.json(
        &["--config", &c, "sync", "--site", "parents", "--pack-now"],
        0,
    );
    chmod("755");
    assert_eq!(r[0]["archived_files"], 4, "{r}");
    assert_eq!(r[0]["freed_files"], 0, "{r}");
    assert_eq!(r[0]["waiting_to_free"], 4, "{r}");
    let st = env.json(&["--config", &c, "status"], 0);
    assert_eq!(st["sites"][0]["waiting_to_free"]["files"], 4, "{st}");
    assert_eq!(
        st["sites"][0]["staged"]["files"], 0,
        "not also counted as staged: {st}"
    );
    // Any later run frees them, packing or not.
    let r = env.json(&["--config", &c, "sync", "--site", "parents"], 0);
    assert_eq!(r[0]["freed_files"], 4, "{r}");
    assert_eq!(std::fs::read_dir(&stage_dir).unwrap().count(), 0);
    let st = env.json(&["--config", &c, "status"], 0);
    assert_eq!(st["sites"][0]["waiting_to_free"]["files"], 0, "{st}");
    let _ = std::fs::remove_dir_all(&stage_root);
}

/// A kill while a site mark was written in place (SFTP, before marks went through a
/// partial name) left it empty or cut: the site then stopped for good as "not a lomob
/// mark". A cut copy of the site's own mark is written again; other bytes still stop it.
#[test]
fn a_site_mark_cut_by_a_kill_is_written_again() {
    let env = Env::new();
    library(&env, 2, 1_000);
    let root = env.path().display().to_string();
    let c = env.config_named("one.toml",
        &format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.a]\nstage = {{ kind = \"fs\", root = \"{root}/nas/lomob\" }}\narchive = {{ kind = \"fs\", root = \"{root}/a-archive\" }}\n"
        ),
    );
    env.json(&["--config", &c, "backup"], 0);
    let path = env.path().join("nas/lomob/meta/site.json");
    let whole = std::fs::read(&path).unwrap();
    for cut in [0, 1, whole.len() / 2, whole.len() - 3] {
        std::fs::write(&path, &whole[..cut]).unwrap();
        env.json(&["--config", &c, "sync", "--site", "a"], 0);
        let again = std::fs::read_to_string(&path).unwrap();
        assert!(
            again.ends_with('}') && again.contains("\"site\": \"a\""),
            "cut at {cut}: {again}"
        );
    }
    let meta: Vec<_> = std::fs::read_dir(env.path().join("nas/lomob/meta"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(meta.is_empty(), "{meta:?}");
    // Not the start of this site's mark: refused, and left as it is.
    std::fs::write(&path, b"{\"format\": \"something else\"").unwrap();
    let out = env
        .cmd()
        .args(["--config", &c, "sync", "--site", "a"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("not a lomob site mark"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{\"format\": \"something else\""
    );
}

/// Item 7: two sites with one stage; one freed a copy the other still needed. Now a
/// profile with overlapping locations is refused, and a location is marked for its site
/// and manifest at first use, so another manifest pointing at it is refused too.
#[test]
fn item7_two_sites_or_two_manifests_never_share_a_location() {
    let env = Env::new();
    library(&env, 3, 10_000);
    let root = env.path().display().to_string();
    let c = env.config_named("shared.toml",
        &format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.a]\nstage = {{ kind = \"fs\", root = \"{root}/nas/lomob\" }}\narchive = {{ kind = \"fs\", root = \"{root}/a-archive\" }}\n[sites.b]\nstage = {{ kind = \"fs\", root = \"{root}/nas/lomob/\" }}\narchive = {{ kind = \"fs\", root = \"{root}/b-archive\" }}\n"
        ),
    );
    let out = env
        .cmd()
        .args(["--config", &c, "sync", "--all"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    let e = stderr(&out);
    assert!(
        e.contains("\"a\"") && e.contains("\"b\"") && e.contains("nas/lomob"),
        "{e}"
    );

    // Two machines (manifests) with the same profile.
    let c = env.config_named("one.toml",
        &format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.a]\nstage = {{ kind = \"fs\", root = \"{root}/nas/lomob\" }}\narchive = {{ kind = \"fs\", root = \"{root}/a-archive\" }}\n"
        ),
    );
    env.json(&["--config", &c, "backup"], 0);
    let mark = std::fs::read_to_string(env.path().join("nas/lomob/meta/site.json")).unwrap();
    assert!(mark.contains("\"site\": \"a\""), "{mark}");
    let other = env.path().join("other-machine-db");
    json_db(&env, &other, &["--config", &c, "scan"], 0);
    let out = env
        .cmd()
        .args([
            "--config",
            &c,
            "--db",
            other.to_str().unwrap(),
            "sync",
            "--site",
            "a",
        ])
        .output()
        .unwrap();
    assert_code(&out, 2);
    let e = stderr(&out);
    assert!(e.contains("belongs to site \"a\""), "{e}");
    assert!(e.contains("lomob site claim a"), "{e}");
    let t = env
        .cmd()
        .args([
            "--config",
            &c,
            "--db",
            other.to_str().unwrap(),
            "site",
            "test",
            "a",
        ])
        .output()
        .unwrap();
    assert_code(&t, 1);
    assert!(
        crate::support::stdout(&t).contains("owner"),
        "{}",
        crate::support::stdout(&t)
    );
    // The staged copies of the first manifest are untouched.
    assert_eq!(
        files_under(&env.path().join("nas/lomob/stage")).len(),
        3,
        "nothing was freed by the other manifest"
    );
    // A machine that replaces the first one takes the location over, explicitly.
    env.cmd()
        .args([
            "--config",
            &c,
            "--db",
            other.to_str().unwrap(),
            "site",
            "claim",
            "a",
        ])
        .assert()
        .success();
    json_db(&env, &other, &["--config", &c, "sync", "--site", "a"], 0);
    let out = env
        .cmd()
        .args(["--config", &c, "sync", "--site", "a"])
        .output()
        .unwrap();
    assert_code(&out, 2);
}

/// Unmounts a folder when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path) -> Option<Mounted> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (the test needs root)");
        }
        ok.then(|| Mounted(at.to_path_buf()))
    }

    fn unmount(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Item 8: an unmounted NAS is an empty folder, and every file under it was marked
/// deleted. Now a file system that is gone (or a root found empty) is reported missing
/// (exit 3) and nothing is marked deleted; more than `max-delete` deletions need consent.
#[test]
fn item8_an_unmounted_disk_is_missing_not_deleted() {
    let env = Env::new();
    library(&env, 3, 5_000);
    let nas = env.lib().join("nas");
    let Some(mut mount) = Mounted::tmpfs(&nas) else {
        return;
    };
    for i in 0..4 {
        std::fs::write(nas.join(format!("NAS_{i}.jpg")), vec![i as u8; 1000]).unwrap();
    }
    // A second root that is itself a mount point.
    let usb = env.path().join("usb");
    let Some(mut usb_mount) = Mounted::tmpfs(&usb) else {
        return;
    };
    for i in 0..3 {
        std::fs::write(usb.join(format!("USB_{i}.jpg")), vec![9 + i as u8; 1000]).unwrap();
    }
    let lib = env.lib();
    let args = ["scan", lib.to_str().unwrap(), usb.to_str().unwrap()];
    let r = env.json(&args, 0);
    assert_eq!(r["new"], 10, "{r}");
    mount.unmount();
    usb_mount.unmount();
    let out = env.cmd().args(args).arg("--json").output().unwrap();
    assert_code(&out, 3);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["deleted"], 0, "{r}");
    assert_eq!(r["deletions_held"], 7, "{r}");
    let text = r["problems"].to_string();
    assert!(text.contains("not there now"), "{text}");
    assert!(text.contains("is the disk mounted"), "{text}");
    let st = env.json(&["status"], 0);
    assert_eq!(st["present"]["files"], 10, "{st}");
    assert_eq!(st["deleted"]["files"], 0, "{st}");
    // Mounted again: all there, nothing to report.
    let _again = Mounted::tmpfs(&nas).unwrap();
    for i in 0..4 {
        std::fs::write(nas.join(format!("NAS_{i}.jpg")), vec![i as u8; 1000]).unwrap();
    }
    drop(usb_mount);
}

/// Item 8, continued: deleting more than `max-delete` files of a root at once needs consent.
#[test]
fn item8_a_mass_delete_needs_allow_delete() {
    let env = Env::new();
    library(&env, 10, 2_000);
    let lib = env.lib();
    let lib = lib.to_str().unwrap();
    env.json(&["scan", lib], 0);
    for i in 0..6 {
        std::fs::remove_file(env.lib().join(format!("{:02}/IMG_{i:05}.jpg", i % 3))).unwrap();
    }
    let out = env.cmd().args(["scan", lib, "--json"]).output().unwrap();
    assert_code(&out, 3);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["deleted"].as_u64(), r["deletions_held"].as_u64()),
        (Some(0), Some(6)),
        "{r}"
    );
    assert!(r["problems"].to_string().contains("--allow-delete"), "{r}");
    let r = env.json(&["scan", lib, "--allow-delete"], 0);
    assert_eq!(r["deleted"], 6, "{r}");
    // A retention shorter than a week is refused: a disk away for a few days would lose
    // its files' only off-site copies.
    let root = env.path().display();
    let c = env.config_named("short.toml",
        &format!("[sites.a]\nstage-retention-days = 2\nstage = {{ kind = \"fs\", root = \"{root}/s\" }}\narchive = {{ kind = \"fs\", root = \"{root}/a\" }}\n"),
    );
    let out = env
        .cmd()
        .args(["--config", &c, "site", "list"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("at least 7"), "{}", stderr(&out));
}

/// Item 9: files changed in place with size, mtime and inode kept were never read again;
/// every sync failed on them, five of them stopped the site, and 0-byte objects were left
/// on the stage. Now each is recorded as a flagged new version and staged in the same run,
/// the site goes on, and an aborted upload leaves nothing behind.
#[test]
fn item9_files_changed_without_a_new_mtime_become_new_versions() {
    let env = Env::new();
    library(&env, 7, 20_000);
    let root = env.path().display().to_string();
    let c = env.config_named("c.toml",
        &format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.nas]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n"
        ),
    );
    env.json(&["--config", &c, "scan"], 0);
    // Six files rot in place: same size, same mtime, same inode.
    for i in 0..6 {
        let p = env.lib().join(format!("{:02}/IMG_{i:05}.jpg", i % 3));
        let meta = std::fs::metadata(&p).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"rot").unwrap();
        drop(f);
        set_mtime(
            &p,
            meta.modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        );
    }
    let r = env.json(&["--config", &c, "sync", "--site", "nas"], 0);
    assert_eq!(
        r[0]["ok"], true,
        "the site is not stopped by its files: {r}"
    );
    assert_eq!(
        r[0]["staged_files"], 7,
        "six new versions and the untouched file: {r}"
    );
    assert_eq!(r[0]["silent_changes"].as_array().unwrap().len(), 6, "{r}");
    assert_eq!(r[0]["lost_versions"].as_array().unwrap().len(), 6, "{r}");
    // Only complete objects of current bytes are on the stage.
    let stage = env.path().join("stage/stage");
    let mut current: Vec<String> = files_under(&env.lib())
        .iter()
        .map(|f| {
            let bytes = std::fs::read(env.lib().join(f)).unwrap();
            hex::encode(xxhash_rust::xxh3::xxh3_128(&bytes).to_be_bytes())
        })
        .collect();
    current.sort();
    assert_eq!(files_under(&stage), current);
    let st = env.json(&["--config", &c, "status"], 0);
    assert_eq!(st["silent_changes"], 6, "{st}");
    assert_eq!(st["lost_versions"]["files"], 6, "{st}");
    assert_eq!(st["sites"][0]["not_yet_safe"]["files"], 0, "{st}");
    // Nothing is left to retry.
    let r = env.json(&["--config", &c, "sync", "--site", "nas"], 0);
    assert_eq!(r[0]["staged_files"], 0, "{r}");
    assert_eq!(r[0]["silent_changes"].as_array().unwrap().len(), 0, "{r}");
}

/// Item 11: staged keys, image names and paths from an imported manifest were used as
/// they are for deletes and downloads. Now every field is checked on import.
#[test]
fn item11_an_import_with_keys_or_paths_that_escape_is_refused() {
    let env = Env::new();
    library(&env, 2, 1_000);
    let lib = env.lib();
    env.json(&["backup", lib.to_str().unwrap()], 0);
    let file = env.path().join("m.jsonl");
    env.cmd()
        .args(["manifest", "export"])
        .arg(&file)
        .assert()
        .success();
    let text = std::fs::read_to_string(&file).unwrap();
    for (what, from, to) in [
        (
            "staged key",
            "\"key\":\"stage/",
            "\"key\":\"stage/../../../etc/",
        ),
        ("file path", "\"path\":\"0", "\"path\":\"../../0"),
    ] {
        assert!(text.contains(from), "{what}: {text}");
        let bad = env.path().join("bad.jsonl");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let db = env.path().join(format!("db-{}", what.replace(' ', "-")));
        let out = env
            .cmd()
            .args(["--db", db.to_str().unwrap(), "manifest", "import"])
            .arg(&bad)
            .output()
            .unwrap();
        assert_code(&out, 1);
        let e = stderr(&out);
        assert!(e.contains("line") && e.contains(".."), "{what}: {e}");
    }
}

/// Item 14 (smaller ones): a clock running behind must not prune the newest snapshot, and
/// `iso create` makes the same bytes from the same files.
#[test]
fn item14_snapshots_and_images_do_not_depend_on_the_clock() {
    let env = Env::new();
    library(&env, 3, 3_000);
    let lib = env.lib();
    env.json(&["backup", lib.to_str().unwrap()], 0);
    let meta = env.path().join("home/.local/share/lomob/local/stage/meta");
    // Three snapshots stamped in the future (by a clock that was ahead).
    for y in ["2097", "2098", "2099"] {
        std::fs::write(meta.join(format!("manifest-{y}0101T000000Z.jsonl")), b"old").unwrap();
    }
    // A new file, so the next sync has a change to snapshot.
    std::fs::write(lib.join("new.jpg"), b"new").unwrap();
    env.json(&["backup", lib.to_str().unwrap()], 0);
    let names: Vec<String> = files_under(&meta)
        .into_iter()
        .filter(|f| f.starts_with("manifest-"))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // Both of this manifest's snapshots are kept; the clock-stamped ones count as older.
    assert_eq!(
        names
            .iter()
            .filter(|n| !n.starts_with("manifest-209"))
            .count(),
        2,
        "the newest were pruned: {names:?}"
    );

    let a = env.json(
        &[
            "iso",
            "create",
            "--out",
            env.path().join("a").to_str().unwrap(),
        ],
        0,
    );
    let db = env.path().join("db2");
    json_db(&env, &db, &["scan", lib.to_str().unwrap()], 0);
    let b = json_db(
        &env,
        &db,
        &[
            "iso",
            "create",
            "--out",
            env.path().join("b").to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(a["images"][0]["sha256"], b["images"][0]["sha256"]);
}

/// Item 14: stage requests were estimated before each call, and the archive's listings not
/// counted; `cost` and `--dry-run` priced estimates. Now every HTTP request is counted as
/// sent, by the transport, retries included.
#[test]
fn item14_requests_are_counted_as_sent_retries_included() {
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let run = |faults: usize| {
        let env = Env::new();
        library(&env, 4, 8_000);
        let bucket = format!("count-{}", unique(&env));
        Bucket::new(&ep, &bucket);
        let proxy = crate::support::BreakingProxy::start(&ep, faults);
        let root = env.path().display();
        let c = env.config_named("c.toml",
            &format!(
                "[library]\nroots = [\"{root}/lib\"]\n[sites.b2]\nstage = {{ kind = \"s3\", bucket = \"{bucket}\", endpoint = \"{}\", access-key-id = \"k\", secret-access-key = \"s\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n[sites.b2.transfer]\nconcurrency = 1\n",
                proxy.endpoint()
            ),
        );
        env.json(&["--config", &c, "scan"], 0);
        let r = env.json(&["--config", &c, "sync", "--site", "b2"], 0);
        assert_eq!(r[0]["staged_files"], 4, "{r}");
        r[0]["requests"].clone()
    };
    let clean = run(0);
    let broken = run(3);
    // Four files, the site mark and the snapshot are PUTs.
    assert_eq!(clean["put"], 6, "{clean}");
    let total = |r: &serde_json::Value| {
        ["put", "get", "head", "list", "delete", "post"]
            .iter()
            .map(|k| r[*k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        total(&broken),
        total(&clean) + 3,
        "three broken attempts, retried: {clean} {broken}"
    );
}

/// Item 2, continued: a single PUT whose ETag is not the MD5 of the image (an SSE-KMS
/// bucket) cannot be verified by a server checksum: it is not counted, the image goes up
/// again at once as parts the server checks one by one, and the site keeps doing that.
#[test]
fn item2_an_unverifiable_single_put_is_not_counted_and_parts_are_used_instead() {
    use crate::support::http_proxy::{Action, HttpProxy};
    use std::sync::Arc;
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    library(&env, 4, 50_000);
    let name = format!("kms-{}", unique(&env));
    let bucket = Bucket::new(&ep, &name);
    // Like S3 with SSE-KMS: a PUT's ETag is not the body's MD5.
    let proxy = HttpProxy::start(
        &ep,
        Arc::new(|r| {
            if r.method == "PUT" && r.target.ends_with(".iso") {
                Action::SetHeaders(vec![
                    ("ETag", "\"9b2cf535f27731c974343645a3985328\"".into()),
                    ("x-amz-server-side-encryption", "aws:kms".into()),
                ])
            } else {
                Action::Forward
            }
        }),
    );
    let c = env.config_named(
        "c.toml",
        &cold_site(&env, &proxy.endpoint(), &name, "stage", ""),
    );
    env.json(&["--config", &c, "scan"], 0);
    let r = env.json(&["--config", &c, "sync", "--site", "cold", "--pack-now"], 0);
    assert_eq!(r[0]["ok"], true, "{r}");
    let first = r[0]["unverified_objects"][0].as_str().unwrap().to_string();
    let image = r[0]["images"][0].as_str().unwrap().to_string();
    assert_eq!(r[0]["images"].as_array().unwrap().len(), 1, "{r}");
    assert_ne!(first, format!("archive/{image}"), "{r}");
    assert_eq!(r[0]["archived_files"], 4, "{r}");
    let head = bucket
        .rt
        .block_on(bucket.client.head_object(&format!("archive/{image}")))
        .unwrap();
    assert!(head.etag.contains('-'), "sent as parts: {head:?}");
    // And the next image of the site goes as parts from the start.
    let p = env.write("new/IMG_NEW.jpg", &[3u8; 70_000]);
    set_mtime(&p, 1_700_000_000);
    env.json(&["--config", &c, "scan"], 0);
    let r = env.json(&["--config", &c, "sync", "--site", "cold", "--pack-now"], 0);
    assert_eq!(
        r[0]["unverified_objects"].as_array().unwrap().len(),
        0,
        "{r}"
    );
    assert_eq!(r[0]["images"].as_array().unwrap().len(), 1, "{r}");
    let st = env.json(&["--config", &c, "status"], 0);
    assert_eq!(st["sites"][0]["unverified_objects"]["files"], 1, "{st}");
}

/// Item 12: on an S3 stage, files over 64 MiB were checked by size only, and an SSE-KMS
/// bucket (whose ETag is not an MD5) refused every upload. Now a large file goes up in
/// parts each checked by the server, a wrong part is refused and nothing is left open, and
/// an ETag that is not an MD5 is met by reading the object back.
#[test]
fn item12_stage_objects_are_verified_by_the_server_at_any_size() {
    use crate::support::http_proxy::{Action, HttpProxy};
    use std::sync::Arc;
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    library(&env, 2, 100_000);
    env.write("big/VIDEO.mp4", &vec![42u8; 12_000_000]);
    let name = format!("stage12-{}", unique(&env));
    let bucket = Bucket::new(&ep, &name);
    let root = env.path().display().to_string();
    let site = |endpoint: &str| {
        format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.b2]\nstage = {{ kind = \"s3\", bucket = \"{name}\", endpoint = \"{endpoint}\", access-key-id = \"k\", secret-access-key = \"s\", single-put-max = \"5MiB\", part-size = \"5MiB\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n"
        )
    };
    // A server that answers a part with the ETag of other bytes.
    let wrong_part = HttpProxy::start(
        &ep,
        Arc::new(|r| {
            if r.method == "PUT" && r.target.contains("partNumber=") {
                Action::SetHeaders(vec![(
                    "ETag",
                    "\"00000000000000000000000000000000\"".into(),
                )])
            } else {
                Action::Forward
            }
        }),
    );
    let c = env.config_named("wrong.toml", &site(&wrong_part.endpoint()));
    env.json(&["--config", &c, "scan"], 0);
    let out = env
        .cmd()
        .args(["--config", &c, "sync", "--site", "b2", "--json"])
        .output()
        .unwrap();
    assert_code(&out, 6);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r[0]["staged_files"], 2, "the small files: {r}");
    assert_eq!(r[0]["errors"][0]["kind"], "integrity", "{r}");
    assert!(
        bucket.open_uploads().is_empty(),
        "{:?}",
        bucket.open_uploads()
    );
    // Through an SSE-KMS-like server (a PUT's ETag is not an MD5): read back and verified.
    env.write("new/IMG_NEW.jpg", &[5u8; 30_000]);
    env.json(&["--config", &c, "scan"], 0);
    let kms = HttpProxy::start(
        &ep,
        Arc::new(|r| {
            if r.method == "PUT" && !r.target.contains("partNumber=") {
                Action::SetHeaders(vec![
                    ("ETag", "\"9b2cf535f27731c974343645a3985328\"".into()),
                    ("x-amz-server-side-encryption", "aws:kms".into()),
                ])
            } else {
                Action::Forward
            }
        }),
    );
    let c = env.config_named("kms.toml", &site(&kms.endpoint()));
    let r = env.json(&["--config", &c, "sync", "--site", "b2"], 0);
    assert_eq!(
        r[0]["staged_files"], 2,
        "the large file in parts, the new one read back: {r}"
    );
    assert!(r[0]["requests"]["get"].as_u64().unwrap() >= 1, "{r}");
    // On the server: the large file as parts, byte for byte.
    let key = {
        let bytes = std::fs::read(env.lib().join("big/VIDEO.mp4")).unwrap();
        format!(
            "stage/{}",
            hex::encode(xxhash_rust::xxh3::xxh3_128(&bytes).to_be_bytes())
        )
    };
    let head = bucket.rt.block_on(bucket.client.head_object(&key)).unwrap();
    assert!(head.etag.contains("-3"), "{head:?}");
    let body = bucket
        .rt
        .block_on(bucket.client.get_object(&key, None))
        .unwrap();
    assert_eq!(body.len(), 12_000_000);
    assert!(body.iter().all(|b| *b == 42));
}

/// Item 13: the archive's S3 client read credentials only from the profile or AWS_* keys,
/// so an archive relying on `~/.aws` could list (through OpenDAL) but not put. Now both use
/// the AWS credential chain; and no secret reaches the log, even at trace level.
#[test]
fn item13_the_aws_credential_chain_works_and_secrets_stay_out_of_logs() {
    let (Some(ep), Some(key), Some(secret)) = (
        service_var("LOMOB_TEST_RCLONE_S3_ENDPOINT"),
        service_var("LOMOB_TEST_RCLONE_S3_KEY"),
        service_var("LOMOB_TEST_RCLONE_S3_SECRET"),
    ) else {
        return;
    };
    let env = Env::new();
    library(&env, 3, 20_000);
    let bucket = format!("chain-{}", unique(&env));
    crate::support::make_bucket(&ep, &key, &secret, &bucket);
    let aws = env.path().join("home/.aws");
    std::fs::create_dir_all(&aws).unwrap();
    // A wrong default profile, and the right one under the name AWS_PROFILE gives.
    std::fs::write(
        aws.join("credentials"),
        format!("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[lomobtest]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    let root = env.path().display();
    let c = env.config_named("c.toml",
        &format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.cloud]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"s3\", bucket = \"{bucket}\", endpoint = \"{ep}\", region = \"us-east-1\" }}\n"
        ),
    );
    let out = env
        .cmd()
        .env("AWS_PROFILE", "lomobtest")
        .args(["--config", &c, "-l", "6", "backup", "--pack-now", "--json"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r[0]["archived_files"], 3, "{r}");
    assert!(!stderr(&out).contains(&secret), "the secret is in the log");
    // Keys in the profile, logged at trace level: never shown.
    let c = env.config_named("keys.toml",
        &format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.cloud]\nstage = {{ kind = \"s3\", bucket = \"{bucket}\", prefix = \"/stage\", endpoint = \"{ep}\", access-key-id = \"{key}\", secret-access-key = \"{secret}\" }}\narchive = {{ kind = \"s3\", bucket = \"{bucket}\", endpoint = \"{ep}\", access-key-id = \"{key}\", secret-access-key = \"{secret}\" }}\n"
        ),
    );
    let db = env.path().join("db2");
    let out = env
        .cmd()
        .args([
            "--config",
            &c,
            "--db",
            db.to_str().unwrap(),
            "-l",
            "6",
            "scan",
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let out = env
        .cmd()
        .args([
            "--config",
            &c,
            "--db",
            db.to_str().unwrap(),
            "-l",
            "6",
            "site",
            "claim",
            "cloud",
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let out = env
        .cmd()
        .args([
            "--config",
            &c,
            "--db",
            db.to_str().unwrap(),
            "-l",
            "6",
            "sync",
            "--site",
            "cloud",
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let log = stderr(&out);
    assert!(log.lines().count() > 5, "{log}");
    assert!(!log.contains(&secret), "the secret is in the log");
}

/// Found by the chaos suite (#15): one corrupted answer when the site mark was read
/// (`meta/site.json`, a 200 with a flipped byte) stopped the site with a configuration error
/// (exit 2) saying its own location was not lomob's, or belonged to another manifest. A mark
/// that would stop the site is now read again: this one's second read is ours, and the run
/// goes on.
#[test]
fn item7_a_corrupted_read_of_the_site_mark_does_not_disown_the_location() {
    use crate::support::cloud::cloud;
    use crate::support::http_proxy::{Action, Rule};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let env = Env::new();
    // Armed with N: the next N GETs of the archive's mark are damaged: a flipped byte,
    // except the second of them, an empty answer.
    let corrupt = Arc::new(AtomicUsize::new(0));
    let c2 = corrupt.clone();
    let rule: Arc<Rule> = Arc::new(move |s| {
        if s.method != "GET" || !s.target.contains("meta/site.json") {
            return Action::Forward;
        }
        match c2.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
            Ok(2) => Action::Answer(200),
            Ok(_) => Action::Corrupt,
            Err(_) => Action::Forward,
        }
    });
    let Some(c) = cloud(&env, rule, "") else {
        return;
    };
    library(&env, 2, 20_000);
    env.json(&["--config", &c.cfg, "backup"], 0);
    corrupt.store(1, Ordering::SeqCst);
    library(&env, 3, 20_000);
    let r = env.json(&["--config", &c.cfg, "backup"], 0);
    assert_eq!(
        corrupt.load(Ordering::SeqCst),
        0,
        "the corruption was not used"
    );
    assert_eq!(r[0]["ok"], true, "{r}");
    // The store keeps the mark's digest: two damaged answers are read again, and the
    // third, whole, is believed.
    let sync_all = || {
        let out = env
            .cmd()
            .args(["--config", &c.cfg, "sync", "--all"])
            .output()
            .unwrap();
        (out.status.code(), stderr(&out))
    };
    corrupt.store(2, Ordering::SeqCst);
    let (code, err) = sync_all();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("reading it again"), "{err}");
    assert_eq!(corrupt.load(Ordering::SeqCst), 0);
    // Damaged as often as it is read: a transient error (exit 5), never "not ours".
    corrupt.store(3, Ordering::SeqCst);
    let (code, err) = sync_all();
    assert_eq!(code, Some(5), "{err}");
    assert!(!err.contains("not a lomob site mark"), "{err}");
}

//! End-to-end tests of encrypted sites (age): the stock `age` tool reads every object with
//! the recovery key alone; nothing on a site names a file or holds a run of its bytes, and
//! no secret reaches the manifest, a snapshot or a trace log; restore and recovery from
//! nothing are byte-identical; one file out of a Deep Archive image reads only its own
//! chunks; tampering is an integrity error that writes nothing; an upload killed with -9
//! continues with the same ciphertext.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::cloud::{cloud, forward};
use crate::support::{assert_code, bytes, put, service_var, stderr, unique, walk, Bucket, Env, NS};

/// `lomob key generate` into `file`; returns the recipient.
fn key(env: &Env, file: &Path) -> String {
    let r = env.json(&["key", "generate", "-o", file.to_str().unwrap()], 0);
    r["recipient"].as_str().unwrap().to_string()
}

struct Keys {
    primary: PathBuf,
    recovery: PathBuf,
    section: String,
}

fn keys(env: &Env, site: &str) -> Keys {
    let primary = env.path().join("primary.key");
    let recovery = env.path().join("recovery.key");
    let (p, r) = (key(env, &primary), key(env, &recovery));
    Keys {
        section: format!(
            "\n[sites.{site}.encryption]\nrecipients = [\"{p}\", \"{r}\"]\nidentity = {{ file = \"{}\" }}\n",
            primary.display()
        ),
        primary,
        recovery,
    }
}

/// The stock age tool (installed by the test script; required when servers are).
fn age_tool() -> bool {
    let found = Command::new("age").arg("--version").output().is_ok();
    assert!(
        found || std::env::var_os("LOMOB_REQUIRE_SERVICES").is_none(),
        "the `age` command is required (apt-get install age)"
    );
    found
}

fn age_decrypt(identity: &Path, object: &Path) -> Vec<u8> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(object)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d {}: {}",
        object.display(),
        stderr(&out)
    );
    out.stdout
}

/// bsdtar lists `image` and extracts it into `dir`.
fn bsdtar_extract(image: &Path, dir: &Path) -> Option<String> {
    if Command::new("bsdtar").arg("--version").output().is_err() {
        return None;
    }
    std::fs::create_dir_all(dir).unwrap();
    let list = Command::new("bsdtar")
        .arg("-tf")
        .arg(image)
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", stderr(&list));
    let x = Command::new("bsdtar")
        .arg("-xf")
        .arg(image)
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", stderr(&x));
    Some(String::from_utf8_lossy(&list.stdout).into_owned())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every object under `roots`: none holds a file's name or a 32-byte run of its bytes.
fn nothing_leaks(roots: &[PathBuf], files: &[(PathBuf, Vec<u8>)]) {
    for root in roots {
        for obj in walk(root) {
            let got = std::fs::read(&obj).unwrap();
            for (path, content) in files {
                let name = path.file_name().unwrap().as_encoded_bytes();
                assert!(
                    !contains(&got, name),
                    "{} names {}",
                    obj.display(),
                    path.display()
                );
                if content.len() >= 32 {
                    for at in [0, (content.len() - 32) / 2, content.len() - 32] {
                        assert!(
                            !contains(&got, &content[at..at + 32]),
                            "{} holds bytes of {}",
                            obj.display(),
                            path.display()
                        );
                    }
                }
            }
        }
    }
}

fn local_site(env: &Env, keys: &Keys) -> String {
    let root = env.path().display().to_string();
    env.config(&format!(
        "[library]\nroots = [\"{root}/lib\"]\n\n[sites.nas]\npack-threshold = \"1GB\"\nstage = {{ kind = \"fs\", root = \"{root}/nas-stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/nas-archive\" }}\n{}",
        keys.section
    ))
}

fn library(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    let specs: Vec<(&[u8], Vec<u8>)> = vec![
        (b"2019/Grandma birthday party.jpg", bytes(1, 200_000)),
        (b"2020/first steps \xff\xfe.mov", bytes(2, 150_000)),
        (
            b"2021/tiny.txt",
            b"a small secret note, readable in any editor".to_vec(),
        ),
        (b"2021/empty.txt", Vec::new()),
    ];
    specs
        .into_iter()
        .enumerate()
        .map(|(i, (rel, c))| (put(env, rel, &c, (1_600_000_000 + i as i64) * NS), c))
        .collect()
}

fn restore(env: &Env, cfg: &str, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["--config", cfg, "restore"];
    all.extend_from_slice(args);
    env.json(&all, code)
}

fn landed(dir: &Path, original: &Path) -> PathBuf {
    dir.join(original.strip_prefix("/").unwrap())
}

/// Every file of `files` is under `dir` with its bytes.
fn all_landed(dir: &Path, files: &[(PathBuf, Vec<u8>)]) {
    for (p, c) in files {
        assert_eq!(
            &std::fs::read(landed(dir, p)).unwrap(),
            c,
            "{}",
            p.display()
        );
    }
}

#[test]
fn an_encrypted_site_round_trips_and_its_objects_say_nothing() {
    let env = Env::new();
    let keys = keys(&env, "nas");
    let cfg = local_site(&env, &keys);
    let mut files = library(&env);
    env.json(&["--config", &cfg, "backup"], 0);
    env.json(
        &["--config", &cfg, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    // One more, only staged.
    let late = (
        put(
            &env,
            b"2022/late arrival.jpg",
            &bytes(3, 90_000),
            1_700_000_000 * NS,
        ),
        bytes(3, 90_000),
    );
    files.push(late.clone());
    let out = env
        .cmd()
        .args(["--config", &cfg, "--log-level", "trace", "backup"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let trace = String::from_utf8_lossy(&out.stderr).into_owned();

    let stage = env.path().join("nas-stage");
    let archive = env.path().join("nas-archive");
    nothing_leaks(&[stage.clone(), archive.clone()], &files);
    // Every object but the site mark is an age object; images carry no dates.
    let objects: Vec<PathBuf> = walk(&stage).into_iter().chain(walk(&archive)).collect();
    for o in &objects {
        let head = std::fs::read(o).unwrap();
        if o.ends_with("meta/site.json") {
            continue;
        }
        assert!(
            head.starts_with(b"age-encryption.org/v1\n"),
            "{} is not encrypted",
            o.display()
        );
    }
    let image = objects
        .iter()
        .find(|o| o.extension().is_some_and(|e| e == "iso"))
        .expect("an image")
        .clone();
    let name = image.file_name().unwrap().to_str().unwrap();
    assert!(!name.contains("2020") && !name.contains("--"), "{name}");
    // No secret in the manifest, its snapshots or a trace log.
    let secrets: Vec<String> = [&keys.primary, &keys.recovery]
        .iter()
        .map(|k| {
            let text = std::fs::read_to_string(k).unwrap();
            text.lines()
                .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                .unwrap()
                .to_string()
        })
        .collect();
    for f in walk(&env.db()) {
        let b = std::fs::read(&f).unwrap();
        for s in &secrets {
            assert!(
                !contains(&b, s.as_bytes()),
                "{} holds a secret key",
                f.display()
            );
        }
    }
    for s in &secrets {
        assert!(
            !trace.contains(s.as_str()),
            "the trace log holds a secret key"
        );
    }

    // lomob restores every byte.
    let dir = env.path().join("back");
    let r = restore(&env, &cfg, &["--to", dir.to_str().unwrap()], 0);
    assert_eq!(r["restored"], 5, "{r}");
    assert_eq!(r["from_stage"], 1, "{r}");
    all_landed(&dir, &files);

    // The stock age tool, with the recovery key alone, reads the image (an ISO that
    // bsdtar extracts) and the staged copy.
    if age_tool() {
        let iso = env.path().join("image.iso");
        std::fs::write(&iso, age_decrypt(&keys.recovery, &image)).unwrap();
        if let Some(listing) = bsdtar_extract(&iso, &env.path().join("x")) {
            assert!(listing.contains("Grandma birthday party.jpg"), "{listing}");
            let inside = walk(&env.path().join("x"))
                .into_iter()
                .find(|p| p.ends_with("Grandma birthday party.jpg"))
                .unwrap();
            assert_eq!(std::fs::read(inside).unwrap(), files[0].1);
        }
        let staged = walk(&stage.join("stage"));
        assert_eq!(staged.len(), 1, "{staged:?}");
        assert_eq!(age_decrypt(&keys.recovery, &staged[0]), late.1);
    }

    // The recovery key is shown to open the site; status stops asking.
    let st = env.json(&["--config", &cfg, "status"], 0);
    assert!(
        st["sites"][0]["encryption"]["key_verified"].is_null(),
        "{st}"
    );
    env.json(
        &[
            "--config",
            &cfg,
            "key",
            "verify",
            "--site",
            "nas",
            "--identity",
            keys.recovery.to_str().unwrap(),
        ],
        0,
    );
    let st = env.json(&["--config", &cfg, "status"], 0);
    assert!(
        st["sites"][0]["encryption"]["key_verified"].is_string(),
        "{st}"
    );
    assert_eq!(st["sites"][0]["encryption"]["plain_staged"], 0, "{st}");

    // Recovery from the archive's encrypted catalogs alone (manifest and stage gone).
    std::fs::remove_dir_all(env.db()).unwrap();
    std::fs::remove_dir_all(&stage).unwrap();
    let r = env.json(&["--config", &cfg, "recover", "--site", "nas"], 0);
    assert_eq!(r["source"], "catalogs", "{r}");
    let dir = env.path().join("from-catalogs");
    let r = restore(&env, &cfg, &["--to", dir.to_str().unwrap()], 0);
    assert_eq!(r["restored"], 4, "{r}");
    all_landed(&dir, &files[..4]);

    // A key the site was not encrypted to is refused, clearly.
    let stranger = env.path().join("stranger.key");
    key(&env, &stranger);
    let out = env
        .cmd()
        .args([
            "--config",
            &cfg,
            "key",
            "verify",
            "--site",
            "nas",
            "--identity",
            stranger.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("cannot restore the site"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tampered_ciphertext_is_an_integrity_error_and_nothing_is_written() {
    let env = Env::new();
    let keys = keys(&env, "nas");
    let cfg = local_site(&env, &keys);
    let files = library(&env);
    env.json(&["--config", &cfg, "backup"], 0);
    env.json(
        &["--config", &cfg, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    let late = bytes(3, 90_000);
    let late_path = put(&env, b"2022/late.jpg", &late, 1_700_000_000 * NS);
    env.json(&["--config", &cfg, "backup"], 0);
    let flip = |p: &Path, at: usize| {
        let mut b = std::fs::read(p).unwrap();
        b[at] ^= 0x20;
        std::fs::write(p, b).unwrap();
    };
    // A flipped byte in the staged copy: its restore fails, and the deep check says so.
    let staged = walk(&env.path().join("nas-stage/stage"));
    flip(&staged[0], 5_000);
    let dir = env.path().join("back");
    let r = restore(
        &env,
        &cfg,
        &["2022/late.jpg", "--to", dir.to_str().unwrap()],
        6,
    );
    assert_eq!(r["restored"], 0, "{r}");
    assert!(
        r["failed"][0]["message"]
            .as_str()
            .unwrap()
            .contains("authentication"),
        "{r}"
    );
    assert!(!landed(&dir, &late_path).exists());
    let r = env.json(
        &[
            "--config", &cfg, "check", "--site", "nas", "--stage", "--deep",
        ],
        6,
    );
    let found = &r["sites"][0]["parts"][0]["findings"];
    assert_eq!(found[0]["problem"], "wrong-checksum", "{r}");

    // A flipped byte inside the first file's bytes in the image.
    let image = walk(&env.path().join("nas-archive/archive"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "iso"))
        .unwrap();
    let size = std::fs::metadata(&image).unwrap().len() as usize;
    flip(&image, size - 100_000);
    let dir = env.path().join("back2");
    let r = restore(
        &env,
        &cfg,
        &["2019/*", "2020/*", "--to", dir.to_str().unwrap()],
        6,
    );
    assert!(
        r["failed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["message"].as_str().unwrap().contains("authentication")),
        "{r}"
    );
    // Whatever failed was never written under its name.
    for f in r["failed"].as_array().unwrap() {
        let p = f["path"].as_str().unwrap();
        assert!(
            !dir.join(p.trim_start_matches('/')).exists(),
            "{p} was written"
        );
    }
    let _ = files;
}

#[test]
fn a_wrong_or_missing_identity_is_a_clear_error() {
    let env = Env::new();
    let keys = keys(&env, "nas");
    let cfg = local_site(&env, &keys);
    library(&env);
    env.json(&["--config", &cfg, "backup"], 0);
    let root = env.path().display().to_string();
    let stranger = env.path().join("stranger.key");
    key(&env, &stranger);
    let wrong = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(keys.primary.to_str().unwrap(), stranger.to_str().unwrap());
    let wrong = env.config_named("wrong.toml", &wrong);
    let r = restore(&env, &wrong, &["--to", &format!("{root}/w")], 1);
    let msg = r["failed"][0]["message"].as_str().unwrap();
    assert!(msg.contains("not one this object was encrypted to"), "{r}");
    // Backing up needs no identity at all; reading does, and says where to put it.
    let none = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("identity = {{ file = \"{}\" }}\n", keys.primary.display()),
        "",
    );
    let none = env.config_named("none.toml", &none);
    put(&env, b"more.jpg", &bytes(9, 1000), 1_650_000_000 * NS);
    env.json(&["--config", &none, "backup"], 0);
    let r = restore(&env, &none, &["--to", &format!("{root}/n")], 1);
    let msg = r["failed"][0]["message"].as_str().unwrap();
    assert!(msg.contains("identity = { file"), "{r}");
    // A malformed recipient names its place in the profile.
    let bad = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("recipients = [\"age1", "recipients = [\"agx1");
    let bad = env.config_named("bad.toml", &bad);
    let out = env
        .cmd()
        .args(["--config", &bad, "status"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("encryption.recipients[0]"),
        "{}",
        stderr(&out)
    );
}

// ---- Deep Archive on moto ----

/// Appends the encryption section to a moto site's profile.
fn encrypted_cloud(env: &Env, keys: &Keys) -> Option<crate::support::cloud::Cloud> {
    let c = cloud(env, forward(), "")?;
    let text = std::fs::read_to_string(&c.cfg).unwrap() + &keys.section;
    std::fs::write(&c.cfg, text).unwrap();
    Some(c)
}

#[test]
fn one_file_from_an_encrypted_deep_archive_image_reads_its_own_chunks_and_recovery_works() {
    let env = Env::new();
    let keys = keys(&env, "cloud");
    let Some(c) = encrypted_cloud(&env, &keys) else {
        return;
    };
    let mut files = Vec::new();
    for i in 0..24u32 {
        let b = bytes(100 + i, 1 << 20);
        files.push((
            put(
                &env,
                format!("big/{i:02}.mov").as_bytes(),
                &b,
                (1_600_000_000 + i as i64) * NS,
            ),
            b,
        ));
    }
    let photo = bytes(7, 300_000);
    let p = put(&env, b"big/12-photo.jpg", &photo, 1_600_000_012 * NS + 7);
    files.push((p.clone(), photo.clone()));
    env.json(&["--config", &c.cfg, "backup"], 0);
    let synced = env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    let image_name = synced[0]["images"][0].as_str().unwrap().to_string();

    let (gets0, bytes0) = (c.proxy.traffic.count("GET", ""), c.proxy.traffic.bytes());
    let dir = env.path().join("one");
    let d = dir.to_str().unwrap();
    restore(&env, &c.cfg, &["big/12-photo.jpg", "--to", d], 7);
    let r = restore(&env, &c.cfg, &["big/12-photo.jpg", "--to", d], 0);
    assert_eq!(r["restored"], 1, "{r}");
    assert_eq!(std::fs::read(landed(&dir, &p)).unwrap(), photo);
    let gets = c.proxy.traffic.count("GET", "") - gets0;
    let down = c.proxy.traffic.bytes() - bytes0;
    // The header (read once, at most 512 bytes), then the chunks covering the photo: its
    // bytes, at most two chunks more, and a 16-byte tag per chunk.
    let chunks = 300_000u64.div_ceil(65_536) + 2;
    let bound = 300_000 + 2 * 65_536 + 16 * chunks + 512;
    assert!(
        gets <= 3,
        "{gets} GETs: {:?}",
        c.proxy.traffic.log.lock().unwrap()
    );
    assert!(down <= bound, "{down} bytes downloaded, bound {bound}");

    // The archive check reads no image and decrypts nothing: LIST and HEAD only.
    let seen = c.proxy.traffic.log.lock().unwrap().len();
    env.json(
        &["--config", &c.cfg, "check", "--site", "cloud", "--archive"],
        0,
    );
    let log = c.proxy.traffic.log.lock().unwrap()[seen..].to_vec();
    assert!(
        !log.iter()
            .any(|l| l.starts_with("GET ") && l.contains(".iso") && !l.contains("list-type")),
        "{log:?}"
    );

    // The image on moto decrypts with the stock age tool and the recovery key alone.
    if age_tool() {
        // Thawed by the restore above.
        let b = Bucket::new(&c.endpoint, &c.archive_bucket);
        let body =
            b.rt.block_on(b.client.get_object(&format!("archive/{image_name}"), None))
                .unwrap();
        let enc = env.path().join("img.age");
        std::fs::write(&enc, body).unwrap();
        let iso = env.path().join("img.iso");
        std::fs::write(&iso, age_decrypt(&keys.recovery, &enc)).unwrap();
        if let Some(listing) = bsdtar_extract(&iso, &env.path().join("x")) {
            assert!(listing.contains("12-photo.jpg"), "{listing}");
        }
    }

    // Recovery from nothing: the encrypted snapshot, then every byte back.
    std::fs::remove_dir_all(env.db()).unwrap();
    std::fs::remove_dir_all(env.lib()).unwrap();
    let r = env.json(&["--config", &c.cfg, "recover", "--site", "cloud"], 0);
    assert_eq!(r["source"], "snapshot", "{r}");
    assert_eq!(r["files"], 25, "{r}");
    let all = env.path().join("all");
    let r = restore(&env, &c.cfg, &["--to", all.to_str().unwrap()], 0);
    assert_eq!(r["restored"], 25, "{r}");
    all_landed(&all, &files);
}

#[test]
fn an_encrypted_upload_killed_mid_way_continues_with_the_same_ciphertext() {
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    let keys = keys(&env, "cold");
    let mut files = Vec::new();
    for i in 0..6 {
        let b = bytes(200 + i, 5_000_000);
        files.push((
            put(
                &env,
                format!("v/{i}.mov").as_bytes(),
                &b,
                (1_600_000_000 + i as i64) * NS,
            ),
            b,
        ));
    }
    let name = format!("sealed-{}", unique(&env));
    let bucket = Bucket::new(&ep, &name);
    let root = env.path().display();
    let cfg = env.config(&format!(
        "[library]\nroots = [\"{root}/lib\"]\n[sites.cold]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"glacier\", bucket = \"{name}\", endpoint = \"{ep}\", access-key-id = \"k\", secret-access-key = \"s\", part-size = \"5MiB\", single-put-max = \"0\" }}\n[sites.cold.transfer]\nconcurrency = 1\nbandwidth-limit = \"3MB\"\n{}",
        keys.section
    ));
    env.json(&["--config", &cfg, "scan"], 0);
    let mut child = env
        .std_cmd()
        .args(["--config", &cfg, "sync", "--site", "cold", "--pack-now"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let parts = bucket.wait_for_parts(&mut child, 2);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(
        parts >= 2,
        "the upload never sent two parts before the kill"
    );
    let r = env.json(
        &["--config", &cfg, "sync", "--site", "cold", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["ok"], true, "{r}");
    assert_eq!(
        r[0]["uploads_abandoned"], 0,
        "continued, not started anew: {r}"
    );
    assert_eq!(r[0]["archived_files"], 6, "{r}");
    assert!(bucket.open_uploads().is_empty());
    // Parts from before the kill and after it are one ciphertext: every byte decrypts.
    let dir = env.path().join("back");
    let out = env
        .cmd()
        .args(["--config", &cfg, "restore", "--to", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 7); // a thaw first
    let r = restore(&env, &cfg, &["--to", dir.to_str().unwrap()], 0);
    assert_eq!(r["restored"], 6, "{r}");
    all_landed(&dir, &files);
}

#[test]
fn turning_encryption_on_keeps_old_objects_readable_and_counted() {
    let env = Env::new();
    let root = env.path().display().to_string();
    let plain = format!(
        "[library]\nroots = [\"{root}/lib\"]\n\n[sites.nas]\npack-threshold = \"1GB\"\nstage = {{ kind = \"fs\", root = \"{root}/nas-stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/nas-archive\" }}\n"
    );
    let plain_cfg = env.config_named("plain.toml", &plain);
    let mut files = library(&env);
    env.json(&["--config", &plain_cfg, "backup"], 0);
    env.json(
        &[
            "--config",
            &plain_cfg,
            "sync",
            "--site",
            "nas",
            "--pack-now",
        ],
        0,
    );
    let before = bytes(5, 40_000);
    files.push((
        put(&env, b"2022/before.jpg", &before, 1_650_000_000 * NS),
        before,
    ));
    env.json(&["--config", &plain_cfg, "backup"], 0);
    // Encryption on, with the identity behind a passphrase.
    let protected = env.path().join("protected.key");
    let r = env
        .cmd()
        .env("TEST_PASS", "correct horse battery staple")
        .args([
            "--json",
            "key",
            "generate",
            "-o",
            protected.to_str().unwrap(),
            "--passphrase-env",
            "TEST_PASS",
        ])
        .output()
        .unwrap();
    assert_code(&r, 0);
    let recipient = serde_json::from_slice::<serde_json::Value>(&r.stdout).unwrap()["recipient"]
        .as_str()
        .unwrap()
        .to_string();
    let cfg = env.config(&format!(
        "{plain}\n[sites.nas.encryption]\nrecipients = [\"{recipient}\"]\nidentity = {{ file = \"{}\", passphrase = {{ env = \"TEST_PASS\" }} }}\n",
        protected.display()
    ));
    let after = bytes(6, 40_000);
    files.push((
        put(&env, b"2022/after.jpg", &after, 1_660_000_000 * NS),
        after.clone(),
    ));
    env.json(&["--config", &cfg, "backup"], 0);
    let st = env.json(&["--config", &cfg, "status"], 0);
    let e = &st["sites"][0]["encryption"];
    assert_eq!(e["plain_staged"], 1, "{st}");
    assert_eq!(e["plain_images"], 1, "{st}");
    // The new staged copy is encrypted, the old one not.
    let staged = walk(&env.path().join("nas-stage/stage"));
    let sealed = staged
        .iter()
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .starts_with(b"age-encryption.org/v1\n")
        })
        .count();
    assert_eq!((staged.len(), sealed), (2, 1), "{staged:?}");
    // Everything restores, old and new, with the passphrase from the environment; a wrong
    // passphrase is a clear error; the passphrase is in no trace log.
    let dir = env.path().join("back");
    let out = env
        .cmd()
        .env("TEST_PASS", "correct horse battery staple")
        .args([
            "--config",
            &cfg,
            "--log-level",
            "trace",
            "--json",
            "restore",
            "--to",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("battery staple"));
    all_landed(&dir, &files);
    let out = env
        .cmd()
        .env("TEST_PASS", "wrong")
        .args([
            "--config",
            &cfg,
            "--json",
            "restore",
            "--to",
            &format!("{root}/w"),
        ])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("passphrase is wrong")
            || String::from_utf8_lossy(&out.stdout).contains("passphrase is wrong"),
        "{}",
        stderr(&out)
    );
}

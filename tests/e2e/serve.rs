//! `lomob serve` and `lomob site pair`: receivers on loopback (the real binary), a sender
//! that pairs with them and backs up, and the attacks a receiver must refuse.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::support::{assert_code, bytes, stderr, walk, Env};

/// A `lomob serve` process, killed (by its PID) when dropped.
struct Receiver {
    child: Child,
    root: PathBuf,
    address: String,
}

impl Receiver {
    fn start(env: &Env, name: &str) -> Receiver {
        Self::start_on(env, name, "127.0.0.1:0", &[])
    }

    fn start_on(env: &Env, name: &str, listen: &str, extra: &[&str]) -> Receiver {
        let root = env.path().join(name);
        let log = std::fs::File::create(env.path().join(format!("{name}.log"))).unwrap();
        let mut child = env
            .std_cmd()
            .args(["--no-progress", "serve", "--root"])
            .arg(&root)
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        // Readiness: the receiver prints its address once its socket listens.
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let address = first
            .split("https://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| {
                panic!(
                    "receiver {name} did not start: {first:?}\n{}",
                    std::fs::read_to_string(env.path().join(format!("{name}.log"))).unwrap()
                )
            })
            .to_string();
        Receiver {
            child,
            root,
            address,
        }
    }

    fn port(&self) -> &str {
        self.address.rsplit(':').next().unwrap()
    }

    /// `lomob serve pair`: the code it prints.
    fn code(&self, env: &Env, name: &str, extra: &[&str]) -> String {
        let out = env
            .cmd()
            .args(["--json", "serve", "--root"])
            .arg(&self.root)
            .args(["pair", "--name", name])
            .args(extra)
            .output()
            .unwrap();
        assert_code(&out, 0);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["code"].as_str().unwrap().to_string()
    }

    fn stop(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.root.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn profile(env: &Env) -> String {
    env.config(&format!(
        "[library]\nroots = [\"{}\"]\n",
        env.lib().display()
    ))
}

fn pair(env: &Env, cfg: &str, site: &str, code: &str, extra: &[&str]) -> std::process::Output {
    env.cmd()
        .args(["--config", cfg, "site", "pair", site, code])
        .args(extra)
        .output()
        .unwrap()
}

fn library(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    [
        ("2019/Grandma's birthday.jpg", bytes(11, 300_000)),
        ("2020/first steps.mov", bytes(12, 700_000)),
        (
            "2021/note.txt",
            b"a note that must never be readable on the receiver".to_vec(),
        ),
    ]
    .into_iter()
    .map(|(rel, c)| (env.write(rel, &c), c))
    .collect()
}

/// `restore --site SITE` brings every file of `files` back, byte-identical.
fn restores_all(env: &Env, cfg: &str, site: &str, files: &[(PathBuf, Vec<u8>)]) {
    let dir = env.path().join("back");
    let r = env.json(
        &[
            "--config",
            cfg,
            "restore",
            "--site",
            site,
            "--to",
            dir.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(r["restored"], files.len(), "{r}");
    for (p, c) in files {
        let got = std::fs::read(dir.join(p.strip_prefix("/").unwrap())).unwrap();
        assert!(got == *c, "{} came back with other bytes", p.display());
    }
}

/// `site pair` without encryption or probe (the tests that need neither), which must succeed.
fn pair_plain(env: &Env, cfg: &str, site: &str, code: &str) {
    assert_code(
        &pair(env, cfg, site, code, &["--no-encryption", "--no-test"]),
        0,
    );
}

/// `backup` fails; its stderr.
fn backup_fails(env: &Env, cfg: &str) -> String {
    let out = env
        .cmd()
        .args(["--config", cfg, "backup"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    stderr(&out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_paired_receiver_holds_ciphertext_checks_without_reading_and_restores() {
    let env = Env::new();
    let parents = Receiver::start(&env, "parents-home");
    let sister = Receiver::start(&env, "sister-home");
    let cfg = profile(&env);
    let files = library(&env);

    let out = pair(
        &env,
        &cfg,
        "parents",
        &parents.code(&env, "alice", &[]),
        &[],
    );
    assert_code(&out, 0);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("certificate sha256:") && said.contains("encrypted"),
        "{said}"
    );
    assert_code(
        &pair(&env, &cfg, "sister", &sister.code(&env, "alice", &[]), &[]),
        0,
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("[sites.parents.stage]") && text.contains("tls-fingerprint"),
        "{text}"
    );
    // The secret key is in its own file, not in the profile.
    let secret = std::fs::read_to_string(env.path().join("parents.peer-secret")).unwrap();
    assert!(
        !text.contains(secret.trim()),
        "the profile holds the secret key"
    );

    env.json(&["--config", &cfg, "backup"], 0);
    env.json(
        &["--config", &cfg, "sync", "--site", "parents", "--pack-now"],
        0,
    );

    // The receivers hold only ciphertext: no name, no content.
    for r in [&parents, &sister] {
        let objects = walk(&r.root.join("buckets"));
        assert!(objects.len() > 3, "{objects:?}");
        for o in objects {
            let got = std::fs::read(&o).unwrap();
            for (p, c) in &files {
                let name = p.file_name().unwrap().as_encoded_bytes();
                assert!(
                    !contains(&got, name),
                    "{} names {}",
                    o.display(),
                    p.display()
                );
                assert!(
                    !contains(&got, &c[..32]),
                    "{} holds {}",
                    o.display(),
                    p.display()
                );
            }
        }
    }
    let archived: Vec<_> = walk(&parents.root.join("buckets"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("archive"))
        .collect();
    assert!(!archived.is_empty(), "no image on the receiver");

    // check --deep asks the receiver to hash what it holds: no byte comes back.
    let r = env.json(
        &["--config", &cfg, "check", "--site", "parents", "--deep"],
        0,
    );
    let parts = r["sites"][0]["parts"].as_array().unwrap();
    let archive = parts.iter().find(|p| p["part"] == "archive").unwrap();
    assert_eq!(archive["read_bytes"], 0, "{r}");
    assert!(
        archive["in_place_bytes"].as_u64().unwrap() > 1_000_000,
        "{r}"
    );
    assert_eq!(r["sites"][0]["requests"]["get"], 0, "{r}");
    // The same with a file still staged.
    env.write("2022/late.jpg", &bytes(13, 50_000));
    env.json(&["--config", &cfg, "backup"], 0);
    let r = env.json(
        &["--config", &cfg, "check", "--site", "parents", "--deep"],
        0,
    );
    let stage = &r["sites"][0]["parts"][0];
    assert_eq!(stage["part"], "stage", "{r}");
    assert_eq!(stage["read_bytes"], 0, "{r}");
    assert!(stage["in_place_bytes"].as_u64().unwrap() >= 50_000, "{r}");
    assert_eq!(r["sites"][0]["requests"]["get"], 0, "{r}");
    // A bit flipped on the receiver's disk is found, still without a download.
    let bucket_dir = parents.root.join("buckets").join(bucket(&cfg, "parents"));
    let staged = walk(&bucket_dir.join("keys"))
        .into_iter()
        .filter_map(|p| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).ok()
        })
        .find(|v| v["key"].as_str().unwrap().starts_with("stage/"))
        .expect("a staged object");
    let staged = bucket_dir
        .join("blobs")
        .join(staged["blob"].as_str().unwrap());
    let mut b = std::fs::read(&staged).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&staged, b).unwrap();
    let r = env.json(
        &["--config", &cfg, "check", "--site", "parents", "--deep"],
        6,
    );
    assert!(r.to_string().contains("its disk damaged it"), "{r}");
    assert_eq!(r["sites"][0]["requests"]["get"], 0, "{r}");
    // --repair stages it again from the original (stage/ may be overwritten).
    let r = env.json(
        &[
            "--config", &cfg, "check", "--site", "parents", "--stage", "--deep", "--repair",
        ],
        6,
    );
    assert!(r.to_string().contains("staged stage/"), "{r}");
    env.json(
        &["--config", &cfg, "check", "--site", "parents", "--deep"],
        0,
    );
    let mut files = files;
    files.push((env.lib().join("2022/late.jpg"), bytes(13, 50_000)));

    // Restore from the receiver, byte-identical.
    restores_all(&env, &cfg, "parents", &files);

    // A fresh machine with the profile, the secret and the key recovers and restores.
    let fresh = Env::new();
    for f in [
        "config.toml",
        "parents.peer-secret",
        "sister.peer-secret",
        "lomob-identity.txt",
    ] {
        std::fs::copy(env.path().join(f), fresh.path().join(f)).unwrap();
    }
    let fresh_cfg = fresh.path().join("config.toml");
    let moved = std::fs::read_to_string(&fresh_cfg)
        .unwrap()
        .replace(env.path().to_str().unwrap(), fresh.path().to_str().unwrap());
    std::fs::write(&fresh_cfg, moved).unwrap();
    let fresh_cfg = fresh_cfg.to_str().unwrap().to_string();
    fresh.json(&["--config", &fresh_cfg, "recover", "--site", "parents"], 0);
    restores_all(&fresh, &fresh_cfg, "parents", &files);
    drop(sister);
    drop(parents);
}

#[test]
fn wrong_expired_and_reused_codes_are_refused() {
    let env = Env::new();
    let r = Receiver::start(&env, "home");
    let cfg = profile(&env);

    // A code with one character changed: its token (or pin) is not the receiver's.
    let good = r.code(&env, "a", &[]);
    let mut chars: Vec<char> = good.chars().collect();
    let at = chars.len() / 2 + usize::from(chars[chars.len() / 2] == '-');
    chars[at] = if chars[at] == 'a' { 'b' } else { 'a' };
    let wrong: String = chars.into_iter().collect();
    let out = pair(&env, &cfg, "x", &wrong, &["--no-encryption"]);
    assert_ne!(out.status.code(), Some(0));
    let e = stderr(&out);
    assert!(
        e.contains("refused") || e.contains("not a pairing code"),
        "{e}"
    );

    // Used once, then refused.
    pair_plain(&env, &cfg, "once", &good);
    let out = pair(
        &env,
        &cfg,
        "twice",
        &good,
        &["--no-encryption", "--no-test"],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("unknown or was already used"),
        "{}",
        stderr(&out)
    );

    // Expired.
    let short = r.code(&env, "late", &["--valid-for", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = pair(
        &env,
        &cfg,
        "late",
        &short,
        &["--no-encryption", "--no-test"],
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    // Nothing was written for the refused codes.
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        !text.contains("[sites.twice") && !text.contains("[sites.late"),
        "{text}"
    );
}

/// The bucket `site pair` wrote for `site`.
fn bucket(cfg: &str, site: &str) -> String {
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(cfg).unwrap()).unwrap();
    table["sites"][site]["stage"]["bucket"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A signed S3 client that pins the receiver's certificate, as the sender's site does.
fn client(cfg_text: &str, site: &str, bucket: Option<&str>) -> lomob_backends::s3::S3Client {
    let table: toml::Table = toml::from_str(cfg_text).unwrap();
    let mut stage = table["sites"][site]["stage"].as_table().unwrap().clone();
    stage.remove("kind");
    if let Some(b) = bucket {
        stage.insert("bucket".into(), b.into());
    }
    let c: lomob_backends::s3::S3Config = stage.try_into().unwrap();
    lomob_backends::s3::S3Client::new(
        &c,
        "s3",
        lomob_backends::StorageClass::Standard,
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn a_sender_keeps_to_its_bucket_and_the_archive_is_append_only() {
    let env = Env::new();
    let r = Receiver::start(&env, "home");
    let cfg = profile(&env);
    assert_code(
        &pair(
            &env,
            &cfg,
            "a",
            &r.code(&env, "a", &[]),
            &["--no-encryption"],
        ),
        0,
    );
    assert_code(
        &pair(
            &env,
            &cfg,
            "b",
            &r.code(&env, "b", &[]),
            &["--no-encryption"],
        ),
        0,
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mine = client(&text, "a", None);
    let theirs = client(&text, "a", Some(&bucket(&cfg, "b")));
    rt.block_on(async {
        mine.put_object("stage/one", b"one".to_vec(), &[])
            .await
            .unwrap();
        // Sender a's keys on sender b's bucket: nothing is listed, read or written.
        assert!(theirs.head_object("stage/one").await.is_err());
        let e = theirs
            .put_object("stage/x", b"x".to_vec(), &[])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), lomob_backends::ErrorKind::Permission, "{e}");
        assert!(theirs.list_multipart_uploads("").await.is_err());

        // archive/ keeps what it has, whatever the sender asks.
        mine.put_object("archive/a-1.iso", bytes(1, 1000), &[])
            .await
            .unwrap();
        // The same bytes again (a retry after a lost answer) are accepted...
        mine.put_object("archive/a-1.iso", bytes(1, 1000), &[])
            .await
            .unwrap();
        // ...other bytes and deletes are not.
        let e = mine
            .put_object("archive/a-1.iso", bytes(2, 1000), &[])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), lomob_backends::ErrorKind::Permission, "{e}");
        assert!(e.to_string().contains("append-only"), "{e}");
        let e = mine.delete_object("archive/a-1.iso").await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert_eq!(
            mine.head_object("archive/a-1.iso").await.unwrap().size,
            1000
        );
        // stage/ allows deletes: freeing is how the stage stays small.
        mine.delete_object("stage/one").await.unwrap();
        assert!(mine.head_object("stage/one").await.is_err());
    });
}

#[test]
fn the_quota_is_enforced_and_the_sender_says_so() {
    let env = Env::new();
    let r = Receiver::start(&env, "home");
    let cfg = profile(&env);
    library(&env);
    let code = r.code(&env, "small", &["--quota", "400KB"]);
    pair_plain(&env, &cfg, "small", &code);
    let e = backup_fails(&env, &cfg);
    assert!(e.contains("quota") && e.contains("small"), "{e}");
    // What the receiver holds is whole: every blob is the size its object says, and no
    // half-written temporary file is left.
    let status: serde_json::Value = serde_json::from_slice(
        &env.cmd()
            .args(["--json", "serve", "--root"])
            .arg(&r.root)
            .arg("status")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let s = &status["senders"][0];
    assert_eq!(s["name"], "small", "{status}");
    assert!(
        s["stored_bytes"].as_u64().unwrap() <= 400_000 + 20_000,
        "{status}"
    );
    assert!(s["last_sync"].is_string(), "{status}");
    assert!(e.contains("lomob serve quota"), "{e}");
    // Raised while the receiver runs: the next backup goes through.
    let out = env
        .cmd()
        .args(["serve", "--root"])
        .arg(&r.root)
        .args(["quota", "small", "5MB"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    env.json(&["--config", &cfg, "backup"], 0);
}

#[test]
fn a_replaced_receiver_is_refused_loudly() {
    let env = Env::new();
    let r = Receiver::start(&env, "home");
    let cfg = profile(&env);
    library(&env);
    assert_code(
        &pair(
            &env,
            &cfg,
            "p",
            &r.code(&env, "p", &[]),
            &["--no-encryption"],
        ),
        0,
    );
    // One receiver per folder.
    let out = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(&r.root)
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("already serves"), "{}", stderr(&out));
    let port = r.port().to_string();
    let root = r.stop();
    // Another machine answers at the same address: a new certificate.
    std::fs::remove_dir_all(root.join(".lomob-serve")).unwrap();
    let _other = Receiver::start_on(&env, "home", &format!("127.0.0.1:{port}"), &[]);
    let e = backup_fails(&env, &cfg);
    assert!(
        e.contains("certificate fingerprint mismatch") && e.contains("pair again"),
        "{e}"
    );
    // Refused at the handshake: nothing reached the new receiver.
    assert!(walk(&root.join("buckets"))
        .iter()
        .all(|p| !p.to_string_lossy().contains("stage/")));
}

#[test]
fn a_receiver_killed_mid_upload_resumes_where_it_stopped() {
    let env = Env::new();
    let cfg = profile(&env);
    let big = bytes(21, 12 << 20);
    env.write("video/long.mov", &big);
    let r = Receiver::start(&env, "home");
    pair_plain(&env, &cfg, "p", &r.code(&env, "p", &[]));
    // Image parts of 5 MiB, sent slowly enough to be caught mid-way; no retries, so the
    // sender stops as soon as the receiver is gone.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "[sites.p.archive]",
            "[sites.p.transfer]\nbandwidth-limit = \"3MB\"\nretries = 0\nconcurrency = 1\n\n[sites.p.archive]\npart-size = \"5MiB\"",
        ),
    )
    .unwrap();
    env.json(&["--config", &cfg, "backup"], 0);
    let mut sync = env
        .std_cmd()
        .args([
            "--config",
            &cfg,
            "--no-progress",
            "sync",
            "--site",
            "p",
            "--pack-now",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uploads = r
        .root
        .join("buckets")
        .join(bucket(&cfg, "p"))
        .join("uploads");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // A part is kept once its record is written beside its data.
    let kept_parts = || {
        walk(&uploads)
            .iter()
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with('p') && n.ends_with(".json")
            })
            .count()
    };
    while kept_parts() < 1 {
        assert!(std::time::Instant::now() < deadline, "no part arrived");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let port = r.port().to_string();
    // kill -9: the receiver gets no chance to tidy up.
    r.stop();
    assert_ne!(sync.wait().unwrap().code(), Some(0));
    let r = Receiver::start_on(&env, "home", &format!("127.0.0.1:{port}"), &[]);
    let report = env.json(&["--config", &cfg, "sync", "--site", "p", "--pack-now"], 0);
    // The image is 3 parts of 5 MiB: the part the receiver had kept is not sent again.
    let parts = report[0]["requests"]["upload_part"].as_u64().unwrap();
    assert!((1..3).contains(&parts), "{report}");
    assert!(walk(&uploads).is_empty(), "an upload was left behind");
    restores_all(&env, &cfg, "p", &[(env.lib().join("video/long.mov"), big)]);
    drop(r);
}

#[test]
fn wrong_profile_values_are_named() {
    let env = Env::new();
    let cfg = env.config(
        "[sites.p]\n[sites.p.stage]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"https://127.0.0.1:1\"\ntls-fingerprint = \"sha256:1234\"\n[sites.p.archive]\nkind = \"fs\"\nroot = \"/tmp/x\"\n",
    );
    let out = env
        .cmd()
        .args(["--config", &cfg, "site", "list"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("tls-fingerprint"), "{}", stderr(&out));
}

/// A tmpfs mounted for the test and unmounted (by path, it is ours) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_on_the_receiver_leaves_no_corrupt_object() {
    let env = Env::new();
    let root = env.path().join("small-disk");
    let Some(_disk) = Tmpfs::mount(&root, "3m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let cfg = profile(&env);
    for i in 0..5 {
        env.write(&format!("v/{i}.mov"), &bytes(40 + i, 900_000));
    }
    let r = Receiver::start(&env, "small-disk");
    pair_plain(&env, &cfg, "p", &r.code(&env, "p", &[]));
    let e = backup_fails(&env, &cfg);
    assert!(e.contains("disk is full"), "{e}");
    // Every object the receiver holds is whole: its bytes hash to what it recorded.
    let bucket_dir = r.root.join("buckets").join(bucket(&cfg, "p"));
    let mut whole = 0;
    for p in walk(&bucket_dir.join("keys")) {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let blob =
            std::fs::read(bucket_dir.join("blobs").join(v["blob"].as_str().unwrap())).unwrap();
        use sha2::Digest as _;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&blob)),
            v["sha256"].as_str().unwrap(),
            "{}",
            v["key"]
        );
        whole += 1;
    }
    assert!(whole >= 1, "nothing was stored before the disk filled");
    // What a failed write began is gone: the blobs are exactly the objects'.
    let blobs = walk(&bucket_dir.join("blobs")).len();
    assert_eq!(blobs, whole, "a partial blob was left");
    // Once there is room, the next run finishes the job.
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=30m"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(grown.success());
    env.json(&["--config", &cfg, "backup"], 0);
    drop(r);
}

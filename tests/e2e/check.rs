//! End-to-end tests of `lomob check`: the stage part on local disk, moto, rclone serve s3
//! and SFTP (an object deleted, overwritten with other bytes of the same size, truncated,
//! and an unknown one added: each found with no GET, each repaired); the archive part on
//! moto with Deep Archive (an image deleted, replaced, moved to STANDARD: found with no
//! GET and no RestoreObject); the local part (a flipped byte under an unchanged mtime, and
//! the budget's rotation); `status` and `--dry-run`.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use crate::support::cloud::{cloud, forward};
use crate::support::{bytes, make_bucket, put, s3_client, service_var, unique, walk, Env, NS};

fn problems(r: &serde_json::Value, part: &str) -> BTreeSet<String> {
    let parts = r["sites"][0]["parts"].as_array().unwrap();
    let p = parts.iter().find(|p| p["part"] == part).unwrap();
    p["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["problem"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// How a test reaches into a stage behind lomob's back.
enum Stage {
    Dir(PathBuf),
    S3(lomob_backends::s3::S3Client),
}

impl Stage {
    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Runtime::new().unwrap().block_on(f)
    }

    fn delete(&self, key: &str) {
        match self {
            Stage::Dir(d) => std::fs::remove_file(d.join(key)).unwrap(),
            Stage::S3(c) => Self::run(c.delete_object(key)).unwrap(),
        }
    }

    fn write(&self, key: &str, data: &[u8]) {
        match self {
            Stage::Dir(d) => {
                let p = d.join(key);
                std::fs::write(&p, data).unwrap();
                // Written later than lomob staged it: an hour on.
                let f = std::fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
                    .unwrap();
            }
            Stage::S3(c) => {
                Self::run(c.put_object(key, data.to_vec(), &[])).unwrap();
            }
        }
    }
}

/// The stage section and a handle on the stage for `kind`, or None without its server.
fn stage_of(env: &Env, kind: &str) -> Option<(String, Stage)> {
    let tag = format!("stage-{}", unique(env));
    let s3 = |ep: String, k: String, s: String| {
        make_bucket(&ep, &k, &s, &tag);
        let client = s3_client(&ep, &k, &s, &tag, lomob_backends::StorageClass::Standard);
        (
            format!("{{ kind = \"s3\", bucket = \"{tag}\", endpoint = \"{ep}\", access-key-id = \"{k}\", secret-access-key = \"{s}\" }}"),
            Stage::S3(client),
        )
    };
    Some(match kind {
        "fs" => {
            let root = env.path().join("stage");
            (
                format!("{{ kind = \"fs\", root = \"{}\" }}", root.display()),
                Stage::Dir(root),
            )
        }
        "moto" => s3(
            service_var("LOMOB_TEST_MOTO_ENDPOINT")?,
            "k".into(),
            "s".into(),
        ),
        "rclone" => s3(
            service_var("LOMOB_TEST_RCLONE_S3_ENDPOINT")?,
            service_var("LOMOB_TEST_RCLONE_S3_KEY")?,
            service_var("LOMOB_TEST_RCLONE_S3_SECRET")?,
        ),
        "sftp" => {
            let root = format!("{}/{tag}", service_var("LOMOB_TEST_SFTP_ROOT")?);
            (
                format!(
                    "{{ kind = \"sftp\", host = \"{}:{}\", user = \"{}\", key = \"{}\", root = \"{root}\", known-hosts = \"accept\" }}",
                    service_var("LOMOB_TEST_SFTP_HOST")?,
                    service_var("LOMOB_TEST_SFTP_PORT")?,
                    service_var("LOMOB_TEST_SFTP_USER")?,
                    service_var("LOMOB_TEST_SFTP_KEY")?,
                ),
                Stage::Dir(PathBuf::from(root)),
            )
        }
        _ => unreachable!(),
    })
}

fn stage_suite(kind: &str) {
    let env = Env::new();
    let Some((stage, handle)) = stage_of(&env, kind) else {
        return;
    };
    for i in 0..5u32 {
        put(
            &env,
            format!("p/{i}.jpg").as_bytes(),
            &bytes(i, 40_000),
            (1_600_000_000 + i as i64) * NS,
        );
    }
    let cfg = env.config(&format!(
        "[library]\nroots = [\"{}/lib\"]\n[sites.b]\nstage = {stage}\narchive = {{ kind = \"fs\", root = \"{}/archive\" }}\n",
        env.path().display(),
        env.path().display()
    ));
    env.json(&["--config", &cfg, "backup"], 0);
    let r = env.json(&["--config", &cfg, "check", "--site", "b", "--stage"], 0);
    assert!(problems(&r, "stage").is_empty(), "{kind}: {r}");

    let files = env.json_lines(&["--config", &cfg, "list", "files"], 0);
    let key = |i: usize| format!("stage/{}", files[i]["xxh3"].as_str().unwrap());
    handle.delete(&key(0));
    handle.write(&key(1), &bytes(99, 40_000));
    handle.write(&key(2), &bytes(2, 39_000));
    handle.write(&format!("stage/{}", "ab".repeat(16)), b"left by someone");
    handle.write("stage/notes.txt", b"not lomob's");
    let r = env.json(&["--config", &cfg, "check", "--site", "b", "--stage"], 6);
    let changed = if matches!(handle, Stage::S3(_)) {
        "wrong-checksum"
    } else {
        "modified"
    };
    assert_eq!(
        problems(&r, "stage"),
        set(&["missing", changed, "wrong-size", "garbage", "foreign"]),
        "{kind}: {r}"
    );
    assert_eq!(
        r["sites"][0]["requests"]["get"], 0,
        "{kind}: no download: {r}"
    );

    // Repair: staged again from the originals, garbage removed, the foreign object kept.
    let r = env.json(
        &[
            "--config", &cfg, "check", "--site", "b", "--stage", "--repair",
        ],
        6,
    );
    let repaired = r["sites"][0]["parts"][0]["repaired"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(repaired, 4, "{kind}: {r}");
    let r = env.json(&["--config", &cfg, "check", "--site", "b", "--stage"], 6);
    assert_eq!(problems(&r, "stage"), set(&["foreign"]), "{kind}: {r}");
    // And the repaired copies hold the right bytes.
    let r = env.json(
        &[
            "--config", &cfg, "check", "--site", "b", "--stage", "--deep",
        ],
        6,
    );
    assert_eq!(problems(&r, "stage"), set(&["foreign"]), "{kind}: {r}");
    assert_eq!(
        r["sites"][0]["parts"][0]["read_bytes"], 200_000,
        "{kind}: {r}"
    );
}

#[test]
fn stage_check_on_local_disk() {
    stage_suite("fs");
}

#[test]
fn stage_check_on_moto() {
    stage_suite("moto");
}

#[test]
fn stage_check_on_rclone_serve_s3() {
    stage_suite("rclone");
}

#[test]
fn stage_check_on_sftp() {
    stage_suite("sftp");
}

#[test]
fn deep_reads_rotate_within_the_budget_and_find_same_size_changes_with_the_same_date() {
    let env = Env::new();
    let root = env.path().display().to_string();
    for i in 0..6u32 {
        put(
            &env,
            format!("d/{i}.jpg").as_bytes(),
            &bytes(i, 10_000),
            (1_600_000_000 + i as i64) * NS,
        );
    }
    let cfg = env.config(&format!(
        "[library]\nroots = [\"{root}/lib\"]\n[sites.b]\ndeep-budget = \"20KB\"\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n"
    ));
    env.json(&["--config", &cfg, "backup"], 0);
    // Other bytes, same size, same date: only reading finds it.
    let victim = walk(&env.path().join("stage/stage"))
        .into_iter()
        .max()
        .unwrap();
    let mtime = std::fs::metadata(&victim).unwrap().modified().unwrap();
    std::fs::write(&victim, bytes(77, 10_000)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let mut found_at = None;
    for run in 1..=3 {
        let out = env
            .cmd()
            .args([
                "--config", &cfg, "check", "--site", "b", "--stage", "--deep", "--json",
            ])
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["sites"][0]["parts"][0]["read_bytes"], 20_000, "{r}");
        if problems(&r, "stage").contains("wrong-checksum") {
            found_at = Some(run);
            break;
        }
    }
    assert!(
        found_at.is_some(),
        "six objects, two a run: found within three runs"
    );
}

#[test]
fn archive_check_on_deep_archive_finds_each_damage_with_no_get_and_no_thaw() {
    let env = Env::new();
    let Some(c) = cloud(&env, forward(), "") else {
        return;
    };
    // Three images of one file each.
    let cfg_text = std::fs::read_to_string(&c.cfg)
        .unwrap()
        .replace("iso-size = \"1GB\"", "iso-size = \"1MB\"");
    std::fs::write(&c.cfg, cfg_text).unwrap();
    for i in 0..3u32 {
        put(
            &env,
            format!("a/{i}.mov").as_bytes(),
            &bytes(i, 700_000),
            (1_600_000_000 + i as i64 * 86_400) * NS,
        );
    }
    env.json(&["--config", &c.cfg, "backup"], 0);
    let r = env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    let images: Vec<String> = r[0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("archive/{}", i.as_str().unwrap()))
        .collect();
    assert_eq!(images.len(), 3, "{r}");
    let r = env.json(
        &["--config", &c.cfg, "check", "--site", "cloud", "--archive"],
        0,
    );
    assert!(problems(&r, "archive").is_empty(), "{r}");

    let deep = s3_client(
        &c.endpoint,
        "k",
        "s",
        &c.archive_bucket,
        lomob_backends::StorageClass::DeepArchive,
    );
    let standard = s3_client(
        &c.endpoint,
        "k",
        "s",
        &c.archive_bucket,
        lomob_backends::StorageClass::Standard,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        deep.delete_object(&images[0]).await.unwrap();
        let size = deep.head_object(&images[1]).await.unwrap().size as usize;
        deep.put_object(&images[1], bytes(5, size), &[])
            .await
            .unwrap();
        // The same bytes, moved to STANDARD (thawed and copied by hand).
        deep.restore_object(&images[2], 1, lomob_backends::ThawTier::Bulk)
            .await
            .unwrap();
        let body = deep.get_object(&images[2], None).await.unwrap();
        let head = deep.head_object(&images[2]).await.unwrap();
        let meta: Vec<(String, String)> = head.metadata.into_iter().collect();
        standard.put_object(&images[2], body, &meta).await.unwrap();
    });
    let before = c.proxy.traffic.log.lock().unwrap().len();
    let r = env.json(
        &["--config", &c.cfg, "check", "--site", "cloud", "--archive"],
        6,
    );
    assert_eq!(
        problems(&r, "archive"),
        set(&["missing", "wrong-checksum", "wrong-storage-class"]),
        "{r}"
    );
    let sent: Vec<String> = c.proxy.traffic.log.lock().unwrap()[before..].to_vec();
    assert!(
        sent.iter()
            .all(|l| l.starts_with("GET /") && l.contains("list-type") || l.starts_with("HEAD ")),
        "only LIST and HEAD: {sent:?}"
    );
    assert_eq!(r["sites"][0]["requests"]["post"], 0, "{r}");
    assert!(r["sites"][0]["cost_usd"].as_f64().unwrap() < 0.0001, "{r}");

    // Repair queues the files for new images; nothing archived is deleted or overwritten.
    env.json(
        &[
            "--config",
            &c.cfg,
            "check",
            "--site",
            "cloud",
            "--archive",
            "--repair",
        ],
        6,
    );
    let s = env.json(&["--config", &c.cfg, "status"], 0);
    assert_eq!(s["sites"][0]["archived"]["files"], 0, "{s}");
    assert_eq!(s["sites"][0]["unverified_objects"]["files"], 2, "{s}");
    let r = env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["archived_files"], 3, "{r}");
    let r = env.json(
        &["--config", &c.cfg, "check", "--site", "cloud", "--archive"],
        0,
    );
    assert!(problems(&r, "archive").is_empty(), "{r}");
    assert!(
        rt.block_on(deep.head_object(&images[1])).is_ok(),
        "never deleted"
    );
}

#[test]
fn local_check_finds_bytes_changed_under_an_unchanged_date_and_says_how_to_restore_them() {
    let env = Env::new();
    let root = env.path().display().to_string();
    let mut paths = Vec::new();
    for i in 0..10u32 {
        let t = (1_600_000_000 + i as i64) * NS + 5;
        paths.push((
            put(&env, format!("l/{i}.jpg").as_bytes(), &bytes(i, 10_000), t),
            t,
        ));
    }
    let cfg = env.config(&format!(
        "[library]\nroots = [\"{root}/lib\"]\nlocal-budget = \"10KB\"\n[sites.b]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n"
    ));
    env.json(&["--config", &cfg, "backup"], 0);
    // Bit rot: one byte flipped, size, mtime and inode as they were.
    let (victim, t) = &paths[7];
    let mut data = std::fs::read(victim).unwrap();
    data[1234] ^= 0x40;
    std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap()
        .write_all_at(&data, 0)
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(victim)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(*t as u64))
        .unwrap();
    // A scan trusts the stat and sees nothing.
    let lib = env.lib();
    let s = env.json(&["--config", &cfg, "scan", lib.to_str().unwrap()], 0);
    assert_eq!(s["changed"], 0, "{s}");
    // 10 KB a run over ten 10 KB files: found within ten runs.
    let mut finding = None;
    for _ in 0..10 {
        let out = env
            .cmd()
            .args(["--config", &cfg, "check", "--local", "--json"])
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["local"]["read_bytes"], 10_000, "{r}");
        if let Some(f) = r["local"]["findings"].as_array().unwrap().first() {
            assert_eq!(out.status.code(), Some(6));
            finding = Some(f.clone());
            break;
        }
    }
    let f = finding.expect("found within the runs the budget implies");
    assert_eq!(f["problem"], "silent-corruption", "{f}");
    assert!(f["message"].as_str().unwrap().contains("site(s) b"), "{f}");
    let fix = f["fix"].as_str().unwrap();
    assert!(fix.contains("--version 1"), "{fix}");
    // The command given puts the good bytes back.
    let args: Vec<String> = shell_words(fix);
    assert_eq!(args[0], "lomob");
    let out = env
        .cmd()
        .arg("--config")
        .arg(&cfg)
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(victim).unwrap(), bytes(7, 10_000));
    let s = env.json(&["--config", &cfg, "status"], 0);
    assert_eq!(s["silent_changes"], 1, "{s}");
    assert_eq!(s["local_check"]["problems"], 1, "{s}");
}

/// Splits a command line quoted the way lomob quotes paths (single quotes).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in s.chars() {
        match ch {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(ch),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn dry_run_prices_a_full_check_and_sends_nothing() {
    let env = Env::new();
    let Some(c) = cloud(&env, forward(), "") else {
        return;
    };
    put(&env, b"x.jpg", &bytes(1, 50_000), 1_600_000_000 * NS);
    env.json(&["--config", &c.cfg, "backup"], 0);
    env.json(
        &["--config", &c.cfg, "sync", "--site", "cloud", "--pack-now"],
        0,
    );
    let before = c.proxy.traffic.log.lock().unwrap().len();
    let r = env.json(
        &["--config", &c.cfg, "check", "--site", "cloud", "--dry-run"],
        0,
    );
    assert_eq!(
        c.proxy.traffic.log.lock().unwrap().len(),
        before,
        "nothing sent"
    );
    assert_eq!(r["estimate"][0]["head"], 1, "{r}");
    assert!(r["estimate"][0]["usd"].as_f64().unwrap() < 0.0001, "{r}");
}

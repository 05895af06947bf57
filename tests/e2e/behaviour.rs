//! One behaviour suite, run against every backend the test servers offer: the same site
//! probe (write, stat, list, read back, delete on stage and archive) and the same backup
//! (stage, pack, archive, verify, free) must pass on local disk, moto S3, rclone's S3,
//! SFTP and WebDAV.

use crate::support::{make_bucket as bucket, service_var, set_mtime, unique, Env};

/// The backend section for `kind` with a fresh location, or None when its server is absent.
fn backend(env: &Env, kind: &str, role: &str) -> Option<String> {
    let tag = format!("{role}-{}", unique(env));
    Some(match kind {
        "fs" => format!("{{ kind = \"fs\", root = \"{}/{role}\" }}", env.path().display()),
        "moto" => {
            let ep = service_var("LOMOB_TEST_MOTO_ENDPOINT")?;
            bucket(&ep, "k", "s", &tag);
            format!("{{ kind = \"s3\", bucket = \"{tag}\", endpoint = \"{ep}\", access-key-id = \"k\", secret-access-key = \"s\" }}")
        }
        "rclone" => {
            let ep = service_var("LOMOB_TEST_RCLONE_S3_ENDPOINT")?;
            let k = service_var("LOMOB_TEST_RCLONE_S3_KEY")?;
            let s = service_var("LOMOB_TEST_RCLONE_S3_SECRET")?;
            bucket(&ep, &k, &s, &tag);
            format!("{{ kind = \"s3\", bucket = \"{tag}\", endpoint = \"{ep}\", access-key-id = \"{k}\", secret-access-key = \"{s}\" }}")
        }
        "sftp" => format!(
            "{{ kind = \"sftp\", host = \"{}:{}\", user = \"{}\", key = \"{}\", root = \"{}/{tag}\", known-hosts = \"accept\" }}",
            service_var("LOMOB_TEST_SFTP_HOST")?,
            service_var("LOMOB_TEST_SFTP_PORT")?,
            service_var("LOMOB_TEST_SFTP_USER")?,
            service_var("LOMOB_TEST_SFTP_KEY")?,
            service_var("LOMOB_TEST_SFTP_ROOT")?
        ),
        "webdav" => format!(
            "{{ kind = \"webdav\", endpoint = \"{}\", root = \"/{tag}\" }}",
            service_var("LOMOB_TEST_WEBDAV_ENDPOINT")?
        ),
        _ => unreachable!(),
    })
}

fn suite(kind: &str) {
    let env = Env::new();
    let (Some(stage), Some(archive)) =
        (backend(&env, kind, "stage"), backend(&env, kind, "archive"))
    else {
        return;
    };
    for i in 0..4 {
        let data: Vec<u8> = (0..150_000u32).map(|x| (x * 3 + i) as u8).collect();
        let p = env.write(&format!("2024/0{}/IMG_{i}.jpg", i + 1), &data);
        set_mtime(&p, 1_700_000_000 + i64::from(i) * 86_400);
    }
    let cfg = env.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[library]\nroots = [\"{}/lib\"]\n[sites.b]\nstage = {stage}\narchive = {archive}\n",
            env.path().display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let probe = env.json(&["--config", cfg, "site", "test", "b"], 0);
    assert!(
        probe.as_array().unwrap().iter().all(|s| s["ok"] == true),
        "{kind}: {probe}"
    );
    // Below the threshold: staged only.
    let r = env.json(&["--config", cfg, "backup"], 0);
    assert_eq!(r[0]["ok"], true, "{kind}: {r}");
    assert_eq!(r[0]["staged_files"], 4, "{kind}: {r}");
    assert_eq!(r[0]["archived_files"], 0, "{kind}: {r}");
    // Packed from the originals, archived, verified, then the staged copies freed.
    let r = env.json(&["--config", cfg, "sync", "--all", "--pack-now"], 0);
    assert_eq!(r[0]["ok"], true, "{kind}: {r}");
    assert_eq!(r[0]["archived_files"], 4, "{kind}: {r}");
    assert_eq!(r[0]["freed_files"], 4, "{kind}: {r}");
    // A new file when packing anyway goes straight into the image, never staged.
    let data: Vec<u8> = (0..90_000u32).map(|x| (x * 7) as u8).collect();
    env.write("2024/05/IMG_4.jpg", &data);
    let r = env.json(&["--config", cfg, "backup", "--pack-now"], 0);
    assert_eq!(r[0]["ok"], true, "{kind}: {r}");
    assert_eq!(r[0]["staged_files"], 0, "{kind}: {r}");
    assert_eq!(r[0]["archived_files"], 1, "{kind}: {r}");
    assert_eq!(r[0]["freed_files"], 0, "{kind}: {r}");
    // Nothing left to do, nothing sent again.
    let r = env.json(&["--config", cfg, "backup"], 0);
    assert_eq!(r[0]["staged_files"], 0, "{kind}: {r}");
    assert_eq!(r[0]["images"].as_array().unwrap().len(), 0, "{kind}: {r}");
}

#[test]
fn local_disk() {
    suite("fs");
}

#[test]
fn moto_s3() {
    suite("moto");
}

#[test]
fn rclone_s3() {
    suite("rclone");
}

#[test]
fn sftp() {
    suite("sftp");
}

#[test]
fn webdav() {
    suite("webdav");
}

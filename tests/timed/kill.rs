//! Kill -9 at several points of a backup, then run again: the backup completes, verified
//! objects are not sent again (beyond the last second before the kill), no multipart upload
//! is left open, and the manifest is consistent.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{files_under, s3_client, service_var, set_mtime, unique, Env};

pub(crate) fn library(env: &Env, n: usize, size: usize) {
    for i in 0..n {
        let data: Vec<u8> = (0..size)
            .map(|x| ((x as u64 * 2654435761 + i as u64 * 97) >> 7) as u8)
            .collect();
        let p = env.write(&format!("{:02}/IMG_{i:05}.jpg", i % 17), &data);
        set_mtime(&p, 1_600_000_000 + i as i64 * 3_600);
    }
}

fn kill9(child: &mut std::process::Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// A site `cold` whose archive is a fresh Deep Archive bucket on moto: the config file's
/// path, a client for the bucket and a runtime to drive it.
pub(crate) struct ColdSite {
    pub cfg: String,
    pub client: lomob_backends::s3::S3Client,
    pub rt: tokio::runtime::Runtime,
}

impl ColdSite {
    /// `archive_extra` is added to the archive's table, `transfer` to the site's transfer
    /// section.
    pub fn new(env: &Env, ep: &str, prefix: &str, archive_extra: &str, transfer: &str) -> ColdSite {
        let root = env.path().display().to_string();
        let bucket = format!("{prefix}-{}", unique(env));
        let client = s3_client(
            ep,
            "k",
            "s",
            &bucket,
            lomob_backends::StorageClass::DeepArchive,
        );
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(client.create_bucket()).unwrap();
        let cfg = env.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "[library]\nroots = [\"{root}/lib\"]\n[sites.cold]\niso-size = \"1GB\"\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"glacier\", bucket = \"{bucket}\", endpoint = \"{ep}\", access-key-id = \"k\", secret-access-key = \"s\"{archive_extra} }}\n[sites.cold.transfer]\n{transfer}\n"
            ),
        )
        .unwrap();
        ColdSite {
            cfg: cfg.to_str().unwrap().to_string(),
            client,
            rt,
        }
    }
}

/// Starts lomob with `args` and returns once it logs that it is archiving, with the rest of
/// its stderr (kept open, so the child can go on writing to it).
fn spawn_until_archiving(
    env: &Env,
    args: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
) {
    let mut child = env
        .std_cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines();
    let mut archiving = false;
    for l in lines.by_ref() {
        if l.unwrap_or_default().contains("archiving") {
            archiving = true;
            break;
        }
    }
    assert!(archiving, "the run never reached the archive step");
    (child, lines)
}

#[test]
fn killed_while_staging_then_rerun_completes_without_resending_what_was_verified() {
    let _serial = crate::support::serial();
    let env = Env::new();
    library(&env, 300, 120_000);
    let root = env.path().display().to_string();
    let cfg = env.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.nas]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n[sites.nas.transfer]\nconcurrency = 2\n"
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    // Scan first, so the kill lands in the staging.
    env.json(&["--config", &cfg, "scan"], 0);
    let mut child = env
        .std_cmd()
        .args(["--config", &cfg, "sync", "--site", "nas"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stage = env.path().join("stage/stage");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = std::fs::read_dir(&stage).map(|d| d.count()).unwrap_or(0);
        if n >= 60 {
            break;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let done_before = std::fs::read_dir(&stage).map(|d| d.count()).unwrap_or(0);
    kill9(&mut child);
    assert!(
        done_before < 300,
        "the first run finished before it could be killed"
    );

    let r = env.json(&["--config", &cfg, "sync", "--site", "nas"], 0);
    let sent_again = r[0]["staged_files"].as_u64().unwrap();
    assert!(
        sent_again < 300 && sent_again + 30 >= 300 - done_before as u64,
        "second run staged {sent_again} after {done_before} were done: {r}"
    );
    let s = env.json(&["--config", &cfg, "status"], 0);
    assert_eq!(s["sites"][0]["staged"]["files"], 300, "{s}");
    assert_eq!(s["sites"][0]["not_yet_safe"]["files"], 0, "{s}");
    // Every staged object is complete (content-addressed: name = xxh3 of the bytes).
    for f in files_under(&stage) {
        let bytes = std::fs::read(stage.join(&f)).unwrap();
        assert_eq!(bytes.len(), 120_000, "{f}");
        assert_eq!(
            hex::encode(xxhash_rust::xxh3::xxh3_128(&bytes).to_be_bytes()),
            f
        );
    }
    // A third run has nothing to do.
    let r = env.json(&["--config", &cfg, "sync", "--site", "nas"], 0);
    assert_eq!(r[0]["staged_files"], 0);
}

#[test]
fn killed_while_archiving_then_rerun_resumes_the_multipart_upload() {
    let _serial = crate::support::serial();
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    library(&env, 40, 1_000_000); // a 40 MB image in 5 MiB parts
    let site = ColdSite::new(
        &env,
        &ep,
        "kill",
        ", part-size = \"5MiB\", single-put-max = \"0\"",
        "concurrency = 1\nbandwidth-limit = \"20MB\"",
    );
    let (cfg, client, rt) = (&site.cfg, &site.client, &site.rt);
    env.json(&["--config", cfg, "backup"], 0);
    let (mut child, _stderr) = spawn_until_archiving(
        &env,
        &["--config", cfg, "sync", "--site", "cold", "--pack-now"],
    );
    // Kill once the image upload has at least two finished parts on the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut parts_before = 0;
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        let uploads = rt
            .block_on(client.list_multipart_uploads("archive/"))
            .unwrap();
        if let Some(u) = uploads.iter().find(|u| u.key.ends_with(".iso")) {
            parts_before = rt
                .block_on(client.list_parts(&u.key, &u.upload_id))
                .unwrap()
                .len();
            if parts_before >= 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(&mut child);
    assert!(parts_before >= 2, "no parts were finished before the kill");

    let r = env.json(
        &["--config", cfg, "sync", "--site", "cold", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["ok"], true, "{r}");
    let name = r[0]["images"][0].as_str().unwrap().to_string();
    let head = rt
        .block_on(client.head_object(&format!("archive/{name}")))
        .unwrap();
    assert_eq!(head.storage_class, "DEEP_ARCHIVE");
    let list = env.json(&["--config", cfg, "iso", "list"], 0);
    assert_eq!(head.size, list[0]["size"].as_u64().unwrap());
    assert_eq!(
        head.metadata.get("fingerprint").map(String::len),
        Some(64),
        "{head:?}"
    );
    // 40 MB in 5 MiB parts is 8 parts; the rerun sent only those not finished before the
    // kill (the part in flight at the kill may be sent again), plus one PUT each for the
    // catalog and the snapshot, and started no new upload of the image: its Complete is the
    // only POST.
    let puts = r[0]["requests"]["put"].as_u64().unwrap();
    assert!(
        puts <= (8 - parts_before as u64) + 1 + 3,
        "{parts_before} parts were done: {r}"
    );
    assert_eq!(r[0]["requests"]["post"], 1, "{r}");
    // Nothing left open and billing.
    let open = rt.block_on(client.list_multipart_uploads("")).unwrap();
    assert!(open.is_empty(), "{open:?}");
    // Staged copies freed only now that the image is verified.
    assert_eq!(r[0]["freed_files"], 40);
}

#[test]
fn killed_during_a_single_put_image_then_rerun_sends_it_whole_once() {
    let _serial = crate::support::serial();
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    library(&env, 40, 1_000_000); // a 40 MB image, sent as one PUT at 20 MB/s
    let site = ColdSite::new(&env, &ep, "killput", "", "bandwidth-limit = \"20MB\"");
    let (cfg, client, rt) = (&site.cfg, &site.client, &site.rt);
    let (mut child, _stderr) =
        spawn_until_archiving(&env, &["--config", cfg, "backup", "--pack-now", "-l", "4"]);
    // Mid-body: the bandwidth limit makes the PUT take about two seconds; kill once a
    // quarter of it has gone out (bytes written by the process, from /proc).
    let written = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("wchar: ").map(|v| v.trim().parse().ok()))
            })
            .flatten()
            .unwrap_or(0)
    };
    let start = written(child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while written(child.id()) < start + 10_000_000 && Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before the kill"
    );
    kill9(&mut child);
    // A PUT is all or nothing: no object, and no multipart upload was ever started.
    let listed = rt.block_on(client.list_multipart_uploads("")).unwrap();
    assert!(listed.is_empty(), "{listed:?}");

    let r = env.json(&["--config", cfg, "backup", "--pack-now"], 0);
    assert_eq!(r[0]["ok"], true, "{r}");
    assert_eq!(r[0]["archived_files"], 40, "{r}");
    assert_eq!(r[0]["staged_files"], 0, "{r}");
    let name = r[0]["images"][0].as_str().unwrap().to_string();
    let head = rt
        .block_on(client.head_object(&format!("archive/{name}")))
        .unwrap();
    assert_eq!(head.storage_class, "DEEP_ARCHIVE");
    let list = env.json(&["--config", cfg, "iso", "list"], 0);
    assert_eq!(head.size, list[0]["size"].as_u64().unwrap());
    // The image in one PUT, its catalog in another, the snapshot on the stage: no POST.
    assert_eq!(r[0]["requests"]["post"], 0, "{r}");
    assert_eq!(r[0]["requests"]["put"], 3, "{r}");
    let catalog = rt
        .block_on(client.head_object(&format!("archive/{name}.catalog.json")))
        .unwrap();
    assert_eq!(catalog.storage_class, "STANDARD", "readable without a thaw");
}

/// Safety issue, item 3, on a local-disk archive: the `.partial` object of an upload killed
/// midway, whose image the next run cannot lay out again (a file of it changed), is removed
/// by the next run, not left behind.
#[test]
fn a_partial_object_no_run_will_continue_is_removed() {
    let _serial = crate::support::serial();
    let env = Env::new();
    library(&env, 6, 2_000_000); // a 12 MB image, written at 4 MB/s
    let root = env.path().display().to_string();
    let cfg = env.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.nas]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n[sites.nas.transfer]\nbandwidth-limit = \"4MB\"\n"
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    env.json(&["--config", &cfg, "scan"], 0);
    let (mut child, _stderr) = spawn_until_archiving(
        &env,
        &["--config", &cfg, "sync", "--site", "nas", "--pack-now"],
    );
    // Kill once part of the image is written.
    let archive = env.path().join("archive/archive");
    let partial_size = || {
        files_under(&archive)
            .iter()
            .filter(|f| f.ends_with(".partial"))
            .map(|f| std::fs::metadata(archive.join(f)).map_or(0, |m| m.len()))
            .max()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while partial_size() < 2_000_000 && Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(&mut child);
    assert!(partial_size() > 0, "no partial object was left by the kill");
    // A file of that image changes: it can never be laid out again.
    let edited = files_under(&env.lib())
        .into_iter()
        .find(|f| f.ends_with("IMG_00001.jpg"))
        .unwrap();
    let edited = env.lib().join(edited);
    std::fs::write(&edited, b"edited").unwrap();
    set_mtime(&edited, 1_700_000_000);
    env.json(&["--config", &cfg, "scan"], 0);
    let r = env.json(
        &["--config", &cfg, "sync", "--site", "nas", "--pack-now"],
        0,
    );
    assert_eq!(r[0]["uploads_abandoned"], 1, "{r}");
    assert_eq!(r[0]["archived_files"], 6, "{r}");
    let left: Vec<String> = files_under(&archive)
        .into_iter()
        .filter(|f| f.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

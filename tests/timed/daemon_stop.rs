//! SIGTERM while the daemon uploads a multipart archive image to Deep Archive: the daemon
//! exits 0 within its stop-timeout, the next start completes the upload from its journal,
//! and no multipart upload is left open.

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::kill::{library, ColdSite};
use crate::support::{service_var, Env};

fn start(env: &Env, cfg: &str, log: &str) -> Child {
    env.std_cmd()
        .args(["--config", cfg, "daemon"])
        .env("LOMOB_SITES__COLD__PACK_THRESHOLD", "1MB")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path().join(log)).unwrap())
        .spawn()
        .unwrap()
}

fn term(child: &mut Child) -> (Option<i32>, Duration) {
    let t = Instant::now();
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s.code(), t.elapsed());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not stop within a minute of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_during_a_multipart_archive_upload_exits_0_and_the_next_start_finishes_it() {
    let _serial = crate::support::serial();
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    library(&env, 40, 1_000_000); // a 40 MB image in 5 MiB parts
    let site = ColdSite::new(
        &env,
        &ep,
        "term",
        ", part-size = \"5MiB\", single-put-max = \"0\"",
        "concurrency = 1\nbandwidth-limit = \"4MB\"",
    );
    let (cfg, client, rt) = (&site.cfg, &site.client, &site.rt);
    std::fs::OpenOptions::new()
        .append(true)
        .open(cfg)
        .unwrap()
        .write_all(
            b"[daemon]\nsettle = \"200ms\"\nstage-delay = \"200ms\"\njitter = \"0s\"\nstop-timeout = \"3s\"\n[sites.cold.schedule]\nsync = \"on-change\"\ncheck-stage = \"off\"\ncheck-archive = \"off\"\ncheck-local = \"off\"\n",
        )
        .unwrap();

    let mut daemon = start(&env, cfg, "first.log");
    let log = |name: &str| std::fs::read_to_string(env.path().join(name)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut parts = 0;
    while parts < 2 {
        assert!(
            Instant::now() < deadline && daemon.try_wait().unwrap().is_none(),
            "the daemon never got two parts of the image up:\n{}",
            log("first.log")
        );
        let uploads = rt
            .block_on(client.list_multipart_uploads("archive/"))
            .unwrap();
        if let Some(u) = uploads.iter().find(|u| u.key.ends_with(".iso")) {
            parts = rt
                .block_on(client.list_parts(&u.key, &u.upload_id))
                .unwrap()
                .len();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, took) = term(&mut daemon);
    let first = log("first.log");
    assert_eq!(code, Some(0), "{first}");
    assert!(
        took < Duration::from_secs(3 + 10),
        "stopped in {took:?}:\n{first}"
    );
    assert!(first.contains("SIGTERM: stopping"), "{first}");
    // The upload was checkpointed, not finished or thrown away.
    let open = rt
        .block_on(client.list_multipart_uploads("archive/"))
        .unwrap();
    assert_eq!(open.len(), 1, "{open:?}\n{first}");
    let checkpointed = open[0].key.clone();

    // The next start goes on where it stopped.
    let mut daemon = start(&env, cfg, "second.log");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = env
            .cmd()
            .args(["--config", cfg, "status", "--json"])
            .output()
            .unwrap();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            if v["sites"][0]["archived"]["files"] == 40 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline && daemon.try_wait().unwrap().is_none(),
            "the restarted daemon did not finish the image:\n{}",
            log("second.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _) = term(&mut daemon);
    assert_eq!(code, Some(0), "{}", log("second.log"));
    let open = rt.block_on(client.list_multipart_uploads("")).unwrap();
    assert!(open.is_empty(), "{open:?}");
    // One image, under the key of the upload that was checkpointed: resumed, not redone.
    let list = env.json(&["--config", cfg, "iso", "list"], 0);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let name = list[0]["name"].as_str().unwrap();
    assert_eq!(checkpointed, format!("archive/{name}"));
    let head = rt.block_on(client.head_object(&checkpointed)).unwrap();
    assert_eq!(head.storage_class, "DEEP_ARCHIVE");
    assert_eq!(head.size, list[0]["size"].as_u64().unwrap());
}

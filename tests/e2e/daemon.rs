//! `lomob daemon` against a real library on local disk: new, moved and deleted files are
//! recorded from the watcher and staged; a burst is staged in a few batched syncs; missed
//! runs catch up once after a clock jump; a failed run is retried and alerted only after;
//! other commands work through the daemon; a root the watch budget cannot cover is
//! rescanned instead and alerted; a moved-away root is never a mass delete; and the service
//! files pass `systemd-analyze verify`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::{bytes, files_under, Env, HookServer};

const DAEMON: &str = r#"
[daemon]
settle = "200ms"
stage-delay = "200ms"
jitter = "0s"
retry-first = "1s"
scan-interval = "1s"
stop-timeout = "5s"
"#;

/// A profile with the daemon settings above and one local-disk site `local` syncing on
/// change, plus `extra`.
fn config(env: &Env, extra: &str) -> String {
    let root = env.path().display();
    env.config(&format!(
        r#"
[library]
roots = ["{root}/lib"]
{DAEMON}
[sites.local]
stage = {{ kind = "fs", root = "{root}/stage" }}
archive = {{ kind = "fs", root = "{root}/archive" }}
[sites.local.schedule]
sync = "on-change"
check-stage = "off"
check-archive = "off"
check-local = "off"
{extra}
"#
    ))
}

/// A running daemon; killed if a test fails before stopping it.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(env: &Env, cfg: &str, envs: &[(&str, &str)]) -> Daemon {
        let log = env.path().join(format!("daemon-{}.log", unique_suffix()));
        let mut c = env.std_cmd();
        c.args(["--config", cfg, "daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in envs {
            c.env(k, v);
        }
        let d = Daemon {
            child: c.spawn().unwrap(),
            log,
        };
        d.wait_for(env, cfg, "the daemon to answer", |env| {
            env.cmd()
                .args(["--config", cfg, "daemon", "status"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        d
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// Polls `cond` until it holds (at most a minute), showing the daemon's log if not.
    fn wait_for(&self, env: &Env, _cfg: &str, what: &str, mut cond: impl FnMut(&Env) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if cond(env) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; daemon log:\n{}", self.log());
    }

    /// SIGTERM; returns the exit code and how long the daemon took to exit.
    fn stop(mut self) -> (Option<i32>, Duration, String) {
        let start = Instant::now();
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code(), start.elapsed(), self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn stage_objects(env: &Env) -> usize {
    let dir = env.path().join("stage/stage");
    if dir.exists() {
        files_under(&dir).len()
    } else {
        0
    }
}

fn files(env: &Env, cfg: &str) -> Vec<serde_json::Value> {
    env.json_lines(&["--config", cfg, "list", "files", "--deleted"], 0)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn state_of(files: &[serde_json::Value], path: &Path) -> Option<&'static str> {
    let p = path.to_str().unwrap();
    files.iter().find(|f| f["path"] == p).map(|f| {
        if f["deleted_at"].is_null() {
            "present"
        } else {
            "deleted"
        }
    })
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn new_moved_and_deleted_files_are_recorded_and_staged_without_a_walk() {
    let env = Env::new();
    let cfg = config(&env, "");
    let d = Daemon::start(&env, &cfg, &[]);
    let lib = std::fs::canonicalize(env.lib()).unwrap();

    // New: staged within the settle time and the stage delay (poll, no fixed wait).
    env.write("2024/a.jpg", &bytes(1, 100_000));
    d.wait_for(&env, &cfg, "the new file to be staged", |env| {
        stage_objects(env) == 1
    });

    // Moved to a new folder: recorded as a rename, no second upload.
    std::fs::create_dir_all(lib.join("2025")).unwrap();
    std::fs::rename(lib.join("2024/a.jpg"), lib.join("2025/b.jpg")).unwrap();
    d.wait_for(&env, &cfg, "the move to be recorded", |env| {
        let f = files(env, &cfg);
        state_of(&f, &lib.join("2025/b.jpg")) == Some("present")
            && state_of(&f, &lib.join("2024/a.jpg")) == Some("deleted")
    });
    assert!(d.log().contains("1 renamed"), "{}", d.log());
    let status = env.json(&["--config", &cfg, "status"], 0);
    assert_eq!(status["sites"][0]["staged"]["files"], 1, "{status}");
    assert_eq!(stage_objects(&env), 1);

    // Deleted: recorded (and kept backed up).
    std::fs::remove_file(lib.join("2025/b.jpg")).unwrap();
    d.wait_for(&env, &cfg, "the deletion to be recorded", |env| {
        state_of(&files(env, &cfg), &lib.join("2025/b.jpg")) == Some("deleted")
    });

    // Another process: a sync through the daemon, and a full scan that finds nothing the
    // watcher missed.
    env.write("2025/c.jpg", &bytes(2, 5_000));
    let out = env
        .cmd()
        .args(["--config", &cfg, "sync", "--site", "local"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run by the lomob daemon"),
        "{out:?}"
    );
    d.wait_for(&env, &cfg, "c.jpg to be staged", |env| {
        stage_objects(env) == 2
    });
    let scan = env.json(&["--config", &cfg, "scan"], 0);
    assert_eq!(
        (&scan["new"], &scan["changed"], &scan["deleted"]),
        (&0.into(), &0.into(), &0.into()),
        "the reconciliation scan found what the watcher missed: {scan}"
    );
    // The daily job through the daemon, and a second daemon refused.
    env.write("2025/d.jpg", &bytes(5, 5_000));
    let out = env
        .cmd()
        .args(["--config", &cfg, "backup"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stage_objects(&env), 3, "{out:?}");
    let out = env
        .cmd()
        .args(["--config", &cfg, "daemon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{out:?}"
    );
    // A command meant for another configuration is refused, not run with the daemon's.
    let other = env.config_named("other.toml", &std::fs::read_to_string(&cfg).unwrap());
    let out = env
        .cmd()
        .args(["--config", &other, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runs with the configuration"),
        "{out:?}"
    );
    // Commands the daemon does not run say who holds the manifest.
    let out = env
        .cmd()
        .args(["--config", &cfg, "manifest", "export", "x.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    let (code, took, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(log.contains("lomob daemon stopped"), "{log}");
    // The next command runs on its own again.
    env.json(&["--config", &cfg, "status"], 0);
}

#[test]
fn a_burst_of_5000_files_is_staged_in_a_few_batched_syncs() {
    let env = Env::new();
    let cfg = config(&env, "");
    let d = Daemon::start(&env, &cfg, &[]);
    for i in 0..5000u32 {
        env.write(
            &format!("burst/{:02}/{i:05}.jpg", i % 50),
            format!("photo {i}").as_bytes(),
        );
    }
    d.wait_for(&env, &cfg, "5,000 files to be staged", |env| {
        stage_objects(env) == 5000
    });
    let log = d.log();
    let syncs = count(&log, "starting the sync of site local");
    assert!(syncs <= 30, "{syncs} syncs for one burst:\n{log}");
    let (code, _, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    let status = env.json(&["--config", &cfg, "status"], 0);
    assert_eq!(status["present"]["files"], 5000, "{status}");
    assert_eq!(status["sites"][0]["not_yet_safe"]["files"], 0, "{status}");
}

#[test]
fn a_missed_run_catches_up_once_after_a_clock_jump_and_a_failed_one_is_retried() {
    let env = Env::new();
    let root = env.path().display().to_string();
    env.write("a.jpg", &bytes(3, 1000));
    // `flaky`'s stage is under a plain file until the test fixes it.
    std::fs::write(env.path().join("blocked"), b"not a folder").unwrap();
    let hook = HookServer::start();
    let cfg = env.config(&format!(
        r#"
[library]
roots = ["{root}/lib"]
{DAEMON}
[alert]
webhook = "{}"
[sites.nightly]
stage = {{ kind = "fs", root = "{root}/stage-n" }}
archive = {{ kind = "fs", root = "{root}/archive-n" }}
schedule = {{ sync = "daily 02:00", check-stage = "off", check-archive = "off", check-local = "off" }}
[sites.flaky]
stage = {{ kind = "fs", root = "{root}/blocked/stage" }}
archive = {{ kind = "fs", root = "{root}/archive-f" }}
schedule = {{ sync = "daily 02:00", check-stage = "off", check-archive = "off", check-local = "off" }}
"#,
        hook.url("/hook")
    ));
    let clock = env.path().join("clock");
    std::fs::write(&clock, "0").unwrap();
    let clock_env = clock.to_str().unwrap().to_string();
    let d = Daemon::start(&env, &cfg, &[("LOMOB_TEST_CLOCK_FILE", &clock_env)]);
    let job = |env: &Env, site: &str| -> serde_json::Value {
        let v = env.json(&["--config", &cfg, "daemon", "status"], 0);
        v["sites"][site][0].clone()
    };
    // The first start is not a missed run: nothing runs, the next run is tomorrow night.
    d.wait_for(&env, &cfg, "the first schedule pass", |env| {
        !job(env, "nightly")["next"].is_null()
    });
    assert_eq!(count(&d.log(), "starting the sync"), 0, "{}", d.log());

    // The machine sleeps for two days.
    std::fs::write(&clock, (2 * 86_400).to_string()).unwrap();
    d.wait_for(&env, &cfg, "the missed sync to run", |env| {
        job(env, "nightly")["last"]["exit_code"] == 0
    });
    d.wait_for(&env, &cfg, "flaky to be retried", |env| {
        job(env, "flaky")["failing"]["attempts"].as_u64() >= Some(2)
    });
    // Not alerted while it is retried.
    assert!(hook.bodies("POST /hook").is_empty(), "{:?}", hook.seen);
    // The network comes back: the retry succeeds.
    std::fs::remove_file(env.path().join("blocked")).unwrap();
    d.wait_for(&env, &cfg, "flaky's retry to succeed", |env| {
        let j = job(env, "flaky");
        j["failing"].is_null() && j["last"]["exit_code"] == 0
    });
    let log = d.log();
    assert_eq!(count(&log, "starting the sync of site nightly"), 1, "{log}");
    assert!(log.contains("was missed (machine off or asleep)"), "{log}");

    // The next night both run again: a failure cancelled nothing.
    std::fs::write(&clock, (3 * 86_400).to_string()).unwrap();
    d.wait_for(&env, &cfg, "the next night's runs", |_| {
        let log = d.log();
        count(&log, "starting the sync of site nightly") == 2
            && count(&log, "the sync of site flaky ended with exit code 0") == 2
    });
    let (code, _, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn failures_past_the_retry_window_are_alerted_once() {
    let env = Env::new();
    let root = env.path().display().to_string();
    env.write("a.jpg", &bytes(4, 1000));
    std::fs::write(env.path().join("blocked"), b"not a folder").unwrap();
    let hook = HookServer::start();
    let cfg = env.config(&format!(
        r#"
[library]
roots = ["{root}/lib"]
[daemon]
settle = "200ms"
stage-delay = "200ms"
jitter = "0s"
retry-first = "1s"
retry-for = "2s"
[alert]
webhook = "{}"
[sites.flaky]
stage = {{ kind = "fs", root = "{root}/blocked/stage" }}
archive = {{ kind = "fs", root = "{root}/archive-f" }}
schedule = {{ sync = "on-change", check-stage = "off", check-archive = "off", check-local = "off" }}
"#,
        hook.url("/hook")
    ));
    let d = Daemon::start(&env, &cfg, &[]);
    d.wait_for(&env, &cfg, "the alert after the retries", |_| {
        hook.bodies("POST /hook")
            .iter()
            .any(|b| b.contains("kept failing"))
    });
    let (code, _, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    let bodies: Vec<String> = hook
        .bodies("POST /hook")
        .into_iter()
        .filter(|b| b.contains("sync"))
        .collect();
    assert_eq!(bodies.len(), 1, "one alert, after the retries: {bodies:?}");
    assert!(bodies[0].contains("kept failing"), "{}", bodies[0]);
    assert!(count(&log, "failed; retrying") >= 1, "{log}");
}

#[test]
fn a_root_over_the_watch_budget_is_rescanned_instead_and_said_so() {
    let env = Env::new();
    env.write("a/1.jpg", b"one");
    env.write("b/2.jpg", b"two");
    let hook = HookServer::start();
    let cfg = config(
        &env,
        &format!("[alert]\nwebhook = \"{}\"\n", hook.url("/hook")),
    );
    // A budget of one watch (half of 2) for three folders.
    let d = Daemon::start(&env, &cfg, &[("LOMOB_TEST_MAX_WATCHES", "2")]);
    // The daemon answers before its watches are all set up (a loaded machine shows it).
    d.wait_for(
        &env,
        &cfg,
        "the daemon to say its watcher is degraded",
        |env| {
            let out = env
                .cmd()
                .args(["--config", &cfg, "daemon", "status"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("watcher degraded")
        },
    );
    let out = env
        .cmd()
        .args(["--config", &cfg, "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("watcher degraded"), "{text}");
    d.wait_for(&env, &cfg, "the degraded-watch alert", |_| {
        hook.bodies("POST /hook")
            .iter()
            .any(|b| b.contains("cannot watch"))
    });
    // The fallback scan finds a new file.
    let lib = std::fs::canonicalize(env.lib()).unwrap();
    env.write("b/3.jpg", b"three");
    d.wait_for(&env, &cfg, "the fallback scan to find the file", |env| {
        state_of(&files(env, &cfg), &lib.join("b/3.jpg")) == Some("present")
    });
    let (code, _, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(count(&log, "watcher degraded for"), 1, "said once: {log}");
}

#[test]
fn a_root_that_goes_away_is_never_a_mass_delete() {
    let env = Env::new();
    for i in 0..5 {
        env.write(&format!("p/{i}.jpg"), &bytes(10 + i, 500));
    }
    let cfg = config(&env, "");
    let d = Daemon::start(&env, &cfg, &[]);
    let lib = std::fs::canonicalize(env.lib()).unwrap();
    d.wait_for(&env, &cfg, "the start scan", |env| {
        files(env, &cfg).len() == 5
    });
    // The disk goes (the folder moves away, as an unmount leaves nothing there), and
    // changes go on where it now is.
    let away = env.path().join("away");
    std::fs::rename(&lib, &away).unwrap();
    std::fs::remove_file(away.join("p/0.jpg")).unwrap();
    std::fs::write(away.join("p/new.jpg"), b"new").unwrap();
    // A scan now (through the daemon) reports the root missing and deletes nothing.
    let scan = env.json(&["--config", &cfg, "scan"], 3);
    assert_eq!(scan["deleted"], 0, "{scan}");
    assert!(
        scan["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("mounted"),
        "{scan}"
    );
    d.wait_for(&env, &cfg, "the changes to settle", |env| {
        let v = env.json(&["--config", &cfg, "daemon", "status"], 0);
        v["pending_changes"] == 0 && v["running"].as_array().is_some_and(Vec::is_empty)
    });
    let f = files(&env, &cfg);
    assert!(
        f.iter().all(|x| x["deleted_at"].is_null()),
        "files were marked deleted while their disk was gone: {f:?}"
    );
    let (code, _, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn service_files_are_written_and_pass_systemd_analyze() {
    let env = Env::new();
    let cfg = config(&env, "");
    let out = env
        .cmd()
        .args(["--config", &cfg, "service", "install", "--print"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("Restart=on-failure"), "{text}");
    assert!(text.contains(&format!("\"--config\" \"{cfg}\"")), "{text}");
    assert!(
        !env.path().join("home/.config/systemd").exists(),
        "--print wrote files"
    );

    env.cmd()
        .args(["--config", &cfg, "service", "install"])
        .assert()
        .success();
    env.cmd()
        .args(["--config", &cfg, "service", "install", "--timer"])
        .assert()
        .success();
    let units = env.path().join("home/.config/systemd/user");
    let timer = std::fs::read_to_string(units.join("lomob-backup.timer")).unwrap();
    assert!(timer.contains("Persistent=true"), "{timer}");
    for system in ["launchd", "windows"] {
        let out = env
            .cmd()
            .args([
                "--config", &cfg, "service", "install", "--print", "--system", system,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(&cfg), "{text}");
    }
    if which("systemd-analyze") {
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .args(
                [
                    "lomob.service",
                    "lomob-backup.service",
                    "lomob-backup.timer",
                ]
                .map(|u| units.join(u)),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

fn which(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_new_file_reaches_a_moto_stage_through_the_daemon() {
    let env = Env::new();
    let Some(cloud) = crate::support::cloud::cloud(&env, crate::support::cloud::forward(), "")
    else {
        return;
    };
    let mut text = std::fs::read_to_string(&cloud.cfg).unwrap();
    text.push_str(DAEMON);
    text.push_str(
        "[sites.cloud.schedule]\nsync = \"on-change\"\ncheck-stage = \"off\"\ncheck-archive = \"off\"\ncheck-local = \"off\"\n",
    );
    std::fs::write(&cloud.cfg, text).unwrap();
    let cfg = cloud.cfg.clone();
    let d = Daemon::start(&env, &cfg, &[]);
    env.write("2024/IMG_1.jpg", &bytes(21, 300_000));
    d.wait_for(&env, &cfg, "the file to be staged on moto", |env| {
        let v = env.json(&["--config", &cfg, "status"], 0);
        v["sites"][0]["staged"]["files"] == 1
    });
    // The staged object is really there, with the file's bytes.
    let check = env.json(
        &[
            "--config", &cfg, "check", "--site", "cloud", "--stage", "--deep",
        ],
        0,
    );
    assert_eq!(
        check["sites"][0]["parts"][0]["findings"],
        serde_json::json!([]),
        "{check}"
    );
    let (code, _, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
}

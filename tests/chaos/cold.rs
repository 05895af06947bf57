//! Cold-storage faults on the Deep Archive sites, drawn at random per request: RestoreObject
//! answered with 202 (passed on), 200, 409 RestoreAlreadyInProgress and 503; a thaw that
//! stays in progress longer than the wait; a thawed copy that expires in the middle of a
//! restore (InvalidObjectState on GET); and a storage class changed under lomob's feet.
//! Restores through them either finish with the right bytes or stop with a clear message
//! (exit 7 to come back later, 5 for a server that kept failing); the same restore without
//! the faults then brings back every file; `check --archive` reports the changed class.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::invariants::{self, Seen};
use crate::rig::{Chaos, Endpoints, FaultCounts, Rig};
use crate::support::http_proxy::{Action, HttpProxy, Rule};

struct ColdFaults {
    on: AtomicBool,
    /// Every HEAD of an image says this storage class.
    class: Mutex<Option<&'static str>>,
    rng: Mutex<StdRng>,
    counts: FaultCounts,
}

fn rule(f: Arc<ColdFaults>) -> Arc<Rule> {
    Arc::new(move |s| {
        let image = s.target.contains(".iso") && !s.target.contains(".catalog");
        if !image {
            return Action::Forward;
        }
        if s.method == "HEAD" {
            if let Some(class) = *f.class.lock().unwrap() {
                return Action::SetHeaders(vec![("x-amz-storage-class", class.to_string())]);
            }
        }
        if !f.on.load(Ordering::SeqCst) {
            return Action::Forward;
        }
        let draw = f.rng.lock().unwrap().random_range(0..10u32);
        let (kind, action) = match (s.method, draw) {
            ("POST", 0..=3) => ("RestoreObject: 202, passed on", Action::Forward),
            ("POST", 4 | 5) => ("RestoreObject: 200 (already restored)", Action::Answer(200)),
            ("POST", 6 | 7) => (
                "RestoreObject: 409 RestoreAlreadyInProgress",
                Action::Refuse(409, "RestoreAlreadyInProgress"),
            ),
            ("POST", _) => ("RestoreObject: 503", Action::Refuse(503, "SlowDown")),
            ("HEAD", 0..=2) => (
                "thaw longer than the wait",
                Action::SetHeaders(vec![("x-amz-restore", "ongoing-request=\"true\"".into())]),
            ),
            ("GET", 0..=2) => (
                "thawed copy expired mid-restore (InvalidObjectState)",
                Action::Refuse(403, "InvalidObjectState"),
            ),
            _ => return Action::Forward,
        };
        f.counts.count(kind);
        action
    })
}

#[test]
fn cold_storage_faults_end_in_a_restore_or_a_clear_wait() {
    let _serial = crate::support::serial();
    let mut c = Chaos::start("cold", 3);
    let faults = Arc::new(ColdFaults {
        on: AtomicBool::new(false),
        class: Mutex::new(None),
        rng: Mutex::new(StdRng::seed_from_u64(c.rng.random())),
        counts: FaultCounts::default(),
    });
    let mut proxy = None;
    let f = faults.clone();
    let Some(mut rig) = Rig::new(|moto, port| {
        let p = HttpProxy::start(moto, rule(f));
        let endpoint = p.endpoint();
        proxy = Some(p);
        Endpoints {
            moto: endpoint,
            sftp_port: port.to_string(),
        }
    }) else {
        return;
    };
    let mut seen = Seen::default();
    for i in 0..c.iterations {
        let new = c.rng.random_range(6..14);
        rig.lib.change(&mut c.rng, new);
        rig.until_ok(&["backup"]);
        rig.until_ok(&["sync", "--all", "--pack-now"]);
        faults.on.store(true, Ordering::SeqCst);
        for site in ["deep", "vault"] {
            let dir = rig.dir(&format!("cold-restore-{i}-{site}"));
            let to = dir.to_str().unwrap();
            for _ in 0..3 {
                let out = rig.run(&["restore", "--site", site, "--deleted", "--to", to]);
                let code = out.status.code().unwrap_or(-1);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!err.contains("panicked"), "{err}");
                assert!(
                    [0, 1, 5, 7].contains(&code),
                    "restore from {site} under cold faults ended with exit {code}:\n{err}"
                );
                if code == 7 {
                    let v: serde_json::Value =
                        serde_json::from_slice(&out.stdout).unwrap_or_default();
                    assert!(
                        v["run_later"]
                            .as_str()
                            .is_some_and(|r| r.contains("restore")),
                        "a wait without the command to run later: {v}"
                    );
                }
                if code != 0 && code != 7 {
                    // With --json the reasons are in the report's `failed`; otherwise on
                    // stderr.
                    let v: serde_json::Value =
                        serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let said = v["failed"]
                        .as_array()
                        .is_some_and(|f| f.iter().all(|f| f["message"].as_str().is_some()));
                    assert!(
                        said || !err.trim().is_empty(),
                        "exit {code} without a message: {v}"
                    );
                }
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let why = v["failed"][0]["message"].as_str().unwrap_or("").to_string();
                if !why.is_empty() {
                    eprintln!("chaos cold: restore from {site} exit {code}: {why}");
                }
                *c.tally
                    .outcomes
                    .entry(format!("restore under cold faults: exit {code}"))
                    .or_default() += 1;
                if code == 0 {
                    break;
                }
            }
            faults.on.store(false, Ordering::SeqCst);
            // Without the faults, the same restore finishes, and every file is right.
            invariants::restore_all(&mut c, &rig, site, &dir);
            invariants::compare(&mut c, &rig, &dir, site);
            std::fs::remove_dir_all(&dir).ok();
            faults.on.store(true, Ordering::SeqCst);
        }
        faults.on.store(false, Ordering::SeqCst);
        // A storage class changed under lomob's feet is what the monthly check reports.
        let class = ["GLACIER", "STANDARD"][c.rng.random_range(0..2)];
        *faults.class.lock().unwrap() = Some(class);
        c.fault(&format!("storage class changed to {class}"));
        let out = rig.run(&["check", "--site", "deep", "--archive"]);
        *faults.class.lock().unwrap() = None;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let text = v.to_string();
        assert!(
            text.contains("wrong-storage-class"),
            "a changed storage class went unreported: {v}"
        );
        assert!(!out.status.success(), "findings must fail the check");
        invariants::check(&mut c, &rig, &mut seen, i);
    }
    faults.counts.add_to(&mut c);
    drop(proxy);
    c.finish();
}

//! Kill -9 at random moments of `backup`, `sync --all` and `restore`, against the three
//! chaos sites (multipart and single-PUT Deep Archive on moto, SFTP), then run again to
//! completion and check every invariant. The moment is drawn between the start and the
//! time the same command took last, so kills land in scanning, staging, packing,
//! uploading, verifying, freeing and restoring alike.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::invariants::{self, Seen};
use crate::rig::{kill9, Chaos, Endpoints, Rig};

#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let _serial = crate::support::serial();
    let Some(mut rig) = Rig::new(|moto, port| Endpoints {
        moto: moto.to_string(),
        sftp_port: port.to_string(),
    }) else {
        return;
    };
    let mut c = Chaos::start("kill", 3);
    let mut seen = Seen::default();
    // How long each command took when it ran to its end: the range kills are drawn from.
    let mut took: BTreeMap<&str, Duration> = [
        ("backup", Duration::from_secs(3)),
        ("sync", Duration::from_secs(3)),
        ("restore", Duration::from_secs(2)),
    ]
    .into();
    for i in 0..c.iterations {
        let new = c.rng.random_range(4..12);
        rig.lib.change(&mut c.rng, new);
        let what = if i == 0 {
            "backup"
        } else {
            ["backup", "sync", "restore"][c.rng.random_range(0..3)]
        };
        let restore_dir = rig.dir(&format!("killed-restore-{i}"));
        let site = rig.sites.names[c.rng.random_range(0..3)].clone();
        let args: Vec<&str> = match what {
            "backup" => vec!["backup"],
            "sync" => {
                // sync does not scan: record the change first, so it has work to do.
                rig.until_ok(&["scan"]);
                vec!["sync", "--all"]
            }
            _ => {
                rig.until_ok(&["backup"]);
                vec![
                    "restore",
                    "--site",
                    &site,
                    "--deleted",
                    "--to",
                    restore_dir.to_str().unwrap(),
                ]
            }
        };
        let window = took[what].as_millis().max(50) as u64;
        let delay = Duration::from_millis(c.rng.random_range(0..window));
        let mut child = rig.spawn(&args);
        let started = Instant::now();
        while started.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if kill9(&mut child) {
            eprintln!("chaos kill: iteration {i}: killed {what} after {delay:?}");
            c.fault(&format!("kill -9 during {what}"));
        } else {
            c.fault(&format!("{what} ended before its kill"));
        }
        let started = Instant::now();
        if what == "restore" {
            invariants::restore_all(&mut c, &rig, &site, &restore_dir);
            invariants::compare(&mut c, &rig, &restore_dir, &site);
            std::fs::remove_dir_all(&restore_dir).ok();
        } else {
            rig.until_ok(&args);
            if what == "sync" {
                rig.until_ok(&["backup"]);
            }
        }
        took.insert(what, started.elapsed());
        invariants::check(&mut c, &rig, &mut seen, i);
    }
    c.finish();
}

//! Local faults: a clock that jumps back and forth between runs (libfaketime), a full disk
//! under the manifest and under a restore (a small tmpfs), files rewritten, truncated or
//! deleted while they are read (with and without a new mtime), and a share inside the
//! library unmounted mid-run. Every run completes or fails with a clear message; once the
//! fault is gone, a rerun completes and every invariant holds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::Rng;

use crate::invariants::{self, Seen};
use crate::rig::{content, Chaos, Endpoints, Rig};

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn straight(moto: &str, port: &str) -> Endpoints {
    Endpoints {
        moto: moto.to_string(),
        sftp_port: port.to_string(),
    }
}

#[test]
fn a_clock_that_jumps_between_runs_loses_nothing() {
    let _serial = crate::support::serial();
    let Some(mut rig) = Rig::new(straight) else {
        return;
    };
    if !Path::new(FAKETIME).exists() {
        assert!(
            std::env::var_os("LOMOB_REQUIRE_SERVICES").is_none(),
            "{FAKETIME} is missing: install the faketime package (scripts/test.sh does)"
        );
        eprintln!("chaos clock: SKIPPED, {FAKETIME} is not installed");
        return;
    }
    let mut c = Chaos::start("clock", 3);
    let mut seen = Seen::default();
    for i in 0..c.iterations {
        let new = c.rng.random_range(4..10);
        rig.lib.change(&mut c.rng, new);
        let jump = ["-400d", "-3d", "-1h", "+1h", "+3d", "+40d", "+400d"][c.rng.random_range(0..7)];
        c.fault(&format!("clock {jump}"));
        let out = rig
            .cmd(&["backup"])
            .env("LD_PRELOAD", FAKETIME)
            .env("FAKETIME", jump)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        eprintln!(
            "chaos clock: backup at {jump}: exit {:?}",
            out.status.code()
        );
        // Back on the real clock: the run completes and nothing is lost or expired early.
        rig.until_ok(&["backup"]);
        rig.until_ok(&["sync", "--all", "--pack-now"]);
        invariants::check(&mut c, &rig, &mut seen, i);
    }
    c.finish();
}

/// Files `status` counts as deleted.
fn deleted_files(rig: &Rig) -> u64 {
    let out = rig.run(&["status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["deleted"]["files"].as_u64().unwrap()
}

/// A tmpfs mounted for the test and unmounted (by path, it is ours) when dropped.
struct Tmpfs(PathBuf, bool);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf(), true))
    }

    /// Unmounts now, even while files are open (as a share that drops off the network).
    fn unmount_lazily(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        self.1 = false;
    }

    /// Fills the file system but for about `leave` bytes.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: a valid path and an out-parameter of the right type.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        let size = free.saturating_sub(leave);
        std::fs::write(&filler, vec![0u8; size as usize]).ok();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
}

#[test]
fn a_full_disk_and_files_changing_while_read_lose_nothing() {
    let _serial = crate::support::serial();
    let Some(mut rig) = Rig::new(straight) else {
        return;
    };
    let mut c = Chaos::start("local", 2);
    let mut seen = Seen::default();
    // The manifest's folder on a small file system of its own.
    let data = rig.env.path().join("home/.local/share/lomob");
    let Some(disk) = Tmpfs::mount(&data, "48m") else {
        eprintln!("chaos local: SKIPPED, cannot mount a tmpfs here (not root?)");
        return;
    };
    // A NAS share mounted inside the library, with files of its own.
    let nas_dir = rig.lib.root.join("nas");
    let mut nas = Tmpfs::mount(&nas_dir, "32m").unwrap();
    for i in 0..5 {
        rig.lib
            .write(&format!("nas/NAS_{i:03}.jpg"), 50_000 + i * 7_000);
    }
    // Backed up before anything changes or deletes them (a file deleted before any backup
    // saw it was never lomob's to keep).
    rig.until_ok(&["backup"]);
    for i in 0..c.iterations {
        let new = c.rng.random_range(6..12);
        rig.lib.change(&mut c.rng, new);
        // 1. The manifest's disk is full.
        let leave = c.rng.random_range(0..200_000u64);
        let filler = disk.fill(leave);
        c.fault("disk full under the manifest");
        let out = rig.run(&["backup"]);
        // With --json the reasons are in the report; otherwise on stderr.
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!err.contains("panicked"), "{err}");
        if !out.status.success() {
            assert!(
                err.to_lowercase().contains("space"),
                "a full disk without saying so (exit {:?}):\n{err}",
                out.status.code()
            );
        }
        std::fs::remove_file(&filler).unwrap();
        rig.until_ok(&["backup"]);

        // 2. A file changed again and again while lomob reads it: rewritten in place (half
        //    the time with its date put back, a change no mtime shows), truncated and
        //    written again, or deleted and made anew.
        let rel = "2003/rewritten.mov".to_string();
        let path = rig.lib.root.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content(1, 4_000_000)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (how, keep_mtime) = (c.rng.random_range(0..3u32), c.rng.random_bool(0.5));
        let writer = {
            let (stop, path) = (stop.clone(), path.clone());
            std::thread::spawn(move || {
                use std::os::unix::fs::FileExt;
                let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
                let mut round = 2u64;
                while !stop.load(Ordering::SeqCst) {
                    let bytes = content(round, 4_000_000);
                    match how {
                        0 => {
                            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                            let _ = f.write_all_at(&bytes, 0);
                            if keep_mtime {
                                let _ = f.set_modified(mtime);
                            }
                        }
                        1 => {
                            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                            let _ = f.set_len(round % 1_000_000);
                            let _ = f.write_all_at(&bytes, 0);
                        }
                        _ => {
                            let _ = std::fs::remove_file(&path);
                            let _ = std::fs::write(&path, &bytes);
                        }
                    }
                    round += 1;
                }
            })
        };
        c.fault(
            [
                "file rewritten while read",
                "file truncated while read",
                "file deleted and made anew while read",
            ][how as usize],
        );
        let out = rig.run(&["backup"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        // Its final contents, with a new date: the next backup takes them. Larger than the
        // 3 MiB disk below by itself, so the restore into it cannot fit whatever the
        // library's other sizes drew (a library of 2.7 MB once fitted and the restore
        // rightly succeeded).
        rig.lib
            .write(&rel, c.rng.random_range(3_300_000..5_000_000));
        rig.until_ok(&["backup"]);
        rig.until_ok(&["sync", "--all", "--pack-now"]);

        // 3. A restore into a full disk fails clearly and leaves no file half-written
        //    under its name; with room again, it completes.
        let target = rig.env.path().join(format!("small-{i}"));
        if let Some(small) = Tmpfs::mount(&target, "3m") {
            c.fault("disk full under a restore");
            let args = [
                "restore",
                "--site",
                "vault",
                "--deleted",
                "--to",
                target.to_str().unwrap(),
            ];
            // The first run may only ask for thaws (exit 7); the next one reads.
            let mut out = rig.run(&args);
            for _ in 0..2 {
                if out.status.code() != Some(7) {
                    break;
                }
                out = rig.run(&args);
            }
            // With --json, the reasons are in the report (`failed`), else on stderr.
            let err = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(!err.contains("panicked"), "{err}");
            assert!(
                !out.status.success() && err.to_lowercase().contains("space"),
                "a restore into a full disk must fail and say so (exit {:?}):\n{err}",
                out.status.code()
            );
            for rel in crate::rig::files(&target) {
                let name = rel.rsplit('/').next().unwrap();
                if name.starts_with(".lomob-restore-") {
                    continue;
                }
                let lib_rel = rel
                    .split_once(rig.lib.root.display().to_string().trim_start_matches('/'))
                    .map(|(_, r)| r.trim_start_matches('/').to_string())
                    .unwrap();
                let e = rig.lib.expected()[&lib_rel];
                assert_eq!(
                    std::fs::read(target.join(&rel)).unwrap(),
                    content(e.seed, e.len),
                    "{rel} was left half-written under its name"
                );
            }
            drop(small);
        }
        // 4. The NAS share is unmounted while a backup runs: missing, never a mass delete.
        rig.lib.change(&mut c.rng, 3);
        rig.until_ok(&["backup"]);
        let before = deleted_files(&rig);
        let mut child = rig.spawn(&["backup"]);
        let delay = std::time::Duration::from_millis(c.rng.random_range(0..1_500));
        let started = std::time::Instant::now();
        while started.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        nas.unmount_lazily();
        c.fault("library share unmounted during a run");
        crate::rig::wait_bounded(&mut child, std::time::Duration::from_secs(300), "backup");
        let out = rig.run(&["backup"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            deleted_files(&rig),
            before,
            "an unmounted share was taken for deleted files"
        );
        nas = Tmpfs::mount(&nas_dir, "32m").unwrap();
        rig.lib.put_back("nas");
        rig.until_ok(&["backup"]);
        invariants::check(&mut c, &rig, &mut seen, i);
    }
    drop(nas);
    drop(disk);
    c.finish();
}

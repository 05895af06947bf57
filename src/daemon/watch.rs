//! Watching the library roots for changes, within a budget of the system's watches.
//!
//! On Linux every watched folder costs one inotify watch out of `fs.inotify.max_user_watches`
//! for the whole user; a watcher that takes them all starves everything else (immich#15426).
//! lomob counts a root's folders before watching it and uses at most half of the limit.
//! A root it cannot watch (over budget, a network file system whose remote changes raise no
//! events, the limit hit later, lost events) is *degraded*: said once, shown in `status`,
//! alerted, and rescanned every `scan-interval` instead. Nothing is ever silently unwatched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use notify::{EventKind, RecursiveMode, Watcher as _};
use serde::Serialize;

/// Environment variable that replaces `max_user_watches` (tests make it tiny).
pub const MAX_WATCHES_ENV: &str = "LOMOB_TEST_MAX_WATCHES";

/// How one root is covered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RootState {
    Watching { folders: u64 },
    Degraded { reason: String },
}

/// What the watcher tells the daemon.
#[derive(Debug)]
pub enum Change {
    /// These paths changed (created, written, renamed from or to, deleted).
    Paths(Vec<PathBuf>),
    /// Events were lost under this root (or every root when `None`): rescan it.
    Rescan(Option<PathBuf>),
    /// The watch of this root broke; it is degraded from now on.
    Broken {
        root: Option<PathBuf>,
        reason: String,
    },
}

pub struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    pub roots: BTreeMap<PathBuf, RootState>,
}

/// The system's limit on watches, when it has one.
fn max_watches() -> Option<u64> {
    if let Some(v) = std::env::var(MAX_WATCHES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Some(v);
    }
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Folders under `root` (itself included), counting no further than `stop`.
fn count_folders(root: &Path, stop: u64) -> u64 {
    let mut n = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        n += 1;
        if n > stop {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
    }
    n
}

/// Why changes on this file system raise no local events, if they do not.
#[cfg(target_os = "linux")]
fn remote_fs(root: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(root.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statfs the call fills.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    match st.f_type as i64 {
        0x6969 => Some("NFS"),
        0x517B => Some("SMB"),
        0xFF534D42 => Some("CIFS"),
        0xFE534D42 => Some("SMB2"),
        0x65735546 => Some("FUSE (sshfs, rclone mount...)"),
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn remote_fs(_root: &Path) -> Option<&'static str> {
    None
}

impl Watch {
    /// Watches `roots` (canonical paths), sending what changes to `tx`.
    pub fn start(roots: &[PathBuf], tx: crossbeam_channel::Sender<Change>) -> Watch {
        let mut states = BTreeMap::new();
        let budget = max_watches().map(|m| m / 2);
        let handler_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let msg = match res {
                Ok(ev) if ev.need_rescan() => Change::Rescan(ev.paths.first().cloned()),
                Ok(ev) => match ev.kind {
                    // Reads (ours included) change nothing; a write that closes does.
                    EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write,
                    )) => Change::Paths(ev.paths),
                    EventKind::Access(_) => return,
                    _ if ev.paths.is_empty() => return,
                    _ => Change::Paths(ev.paths),
                },
                Err(e) => Change::Broken {
                    root: e.paths.first().cloned(),
                    reason: match e.kind {
                        notify::ErrorKind::MaxFilesWatch => "the system's limit on watched folders was reached (raise it: sysctl fs.inotify.max_user_watches=524288)".into(),
                        _ => format!("the watcher failed: {e}"),
                    },
                },
            };
            let _ = handler_tx.send(msg);
        });
        let mut watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                let reason = format!("no file watcher on this system ({e})");
                for r in roots {
                    states.insert(
                        r.clone(),
                        RootState::Degraded {
                            reason: reason.clone(),
                        },
                    );
                }
                None
            }
        };
        let mut used = 0u64;
        for root in roots {
            if states.contains_key(root) {
                continue;
            }
            let state = Self::watch_root(watcher.as_mut(), root, budget, &mut used);
            states.insert(root.clone(), state);
        }
        Watch {
            watcher,
            roots: states,
        }
    }

    fn watch_root(
        watcher: Option<&mut notify::RecommendedWatcher>,
        root: &Path,
        budget: Option<u64>,
        used: &mut u64,
    ) -> RootState {
        let degraded = |reason: String| RootState::Degraded { reason };
        let Some(w) = watcher else {
            return degraded("no file watcher".into());
        };
        if !root.is_dir() {
            return degraded("the root is missing (is the disk mounted?)".into());
        }
        if let Some(kind) = remote_fs(root) {
            return degraded(format!(
                "it is on a network file system ({kind}): changes made on other machines raise no events here"
            ));
        }
        let left = budget.map(|b| b.saturating_sub(*used));
        let folders = count_folders(root, left.unwrap_or(u64::MAX));
        if let (Some(left), Some(budget)) = (left, budget) {
            if folders > left {
                return degraded(format!(
                    "it has more folders than the watch budget allows ({budget}, half of fs.inotify.max_user_watches); raise the limit with `sysctl fs.inotify.max_user_watches=524288`"
                ));
            }
        }
        match w.watch(root, RecursiveMode::Recursive) {
            Ok(()) => {
                *used += folders;
                RootState::Watching { folders }
            }
            Err(e) => {
                let _ = w.unwatch(root);
                degraded(format!("it cannot be watched: {e}"))
            }
        }
    }

    /// Marks the root holding `path` (or every root) degraded; true when it was not already.
    pub fn degrade(&mut self, path: Option<&Path>, reason: &str) -> Vec<PathBuf> {
        let mut newly = Vec::new();
        for (root, state) in self.roots.iter_mut() {
            if path.is_some_and(|p| !p.starts_with(root)) {
                continue;
            }
            if matches!(state, RootState::Watching { .. }) {
                *state = RootState::Degraded {
                    reason: reason.to_string(),
                };
                if let Some(w) = self.watcher.as_mut() {
                    let _ = w.unwatch(root);
                }
                newly.push(root.clone());
            }
        }
        newly
    }

    pub fn degraded(&self) -> Vec<(PathBuf, String)> {
        self.roots
            .iter()
            .filter_map(|(r, s)| match s {
                RootState::Degraded { reason } => Some((r.clone(), reason.clone())),
                RootState::Watching { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_folders_and_stops_at_the_bound() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::create_dir_all(d.path().join(format!("a{i}/b"))).unwrap();
        }
        assert_eq!(count_folders(d.path(), u64::MAX), 11);
        assert!(count_folders(d.path(), 3) <= 4);
    }

    #[test]
    fn reports_a_new_file_and_degrades_a_root_over_budget() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir(root.join("x")).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = Watch::start(std::slice::from_ref(&root), tx);
        assert!(
            matches!(w.roots[&root], RootState::Watching { folders: 2 }),
            "{:?}",
            w.roots
        );
        std::fs::write(root.join("x/new.jpg"), b"hello").unwrap();
        let want = root.join("x/new.jpg");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut seen = false;
        while !seen && std::time::Instant::now() < deadline {
            if let Ok(Change::Paths(p)) = rx.recv_timeout(Duration::from_millis(200)) {
                seen = p.contains(&want);
            }
        }
        assert!(seen, "no event for {want:?}");

        let mut used = 0;
        let mut fresh = notify::recommended_watcher(|_| {}).unwrap();
        let state = Watch::watch_root(Some(&mut fresh), &root, Some(1), &mut used);
        assert!(
            matches!(&state, RootState::Degraded { reason } if reason.contains("budget")),
            "{state:?}"
        );
        assert_eq!(used, 0);
    }
}

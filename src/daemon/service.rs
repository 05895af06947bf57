//! Service files that start lomob without a terminal: the daemon as a systemd user unit
//! (restarted on failure), or, for people who want no daemon, a systemd timer that runs
//! `lomob backup` daily and catches up after the machine was off (`Persistent=true`); a
//! launchd agent on macOS; a Task Scheduler task on Windows that runs when it missed its
//! time (`StartWhenAvailable`).

use std::path::{Path, PathBuf};

/// One file to write: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFile {
    pub path: PathBuf,
    pub text: String,
}

impl ServiceFile {
    /// The file's bytes: UTF-8, except a Task Scheduler task, which declares UTF-16 and is
    /// written as such (UTF-16LE with its byte order mark), the form `schtasks /XML` reads.
    pub fn bytes(&self) -> Vec<u8> {
        if self
            .text
            .starts_with("<?xml version=\"1.0\" encoding=\"UTF-16\"?>")
        {
            let mut b = vec![0xFF, 0xFE];
            b.extend(self.text.encode_utf16().flat_map(u16::to_le_bytes));
            b
        } else {
            self.text.clone().into_bytes()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `lomob daemon`, kept running.
    Daemon,
    /// `lomob backup` once a day, no daemon.
    Timer,
    /// `lomob serve`, a receiver for relatives' backups, kept running.
    Serve,
}

/// The command line the service runs: this executable with the same configuration and
/// manifest the user runs by hand.
pub struct Invocation {
    pub exe: PathBuf,
    pub config: Vec<PathBuf>,
    pub db: Option<PathBuf>,
    /// Words after the command (`serve`'s `--root DIR --listen ADDR`).
    pub extra: Vec<String>,
}

impl Invocation {
    fn args(&self, command: &str) -> Vec<String> {
        let mut v = vec![self.exe.display().to_string()];
        if !self.config.is_empty() {
            v.push("--config".into());
            v.push(
                self.config
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        if let Some(db) = &self.db {
            v.push("--db".into());
            v.push(db.display().to_string());
        }
        v.push("--no-progress".into());
        v.push(command.into());
        v.extend(self.extra.iter().cloned());
        v
    }
}

/// systemd quoting: each word in double quotes, with `\`, `"`, `%` and `$` escaped.
fn systemd_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let e = a
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
                .replace('$', "$$");
            format!("\"{e}\"")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A systemd user unit for a process kept running (restarted on failure, started with the
/// session), with `stopping` lines on how it stops.
fn kept_running(description: &str, args: &[String], stopping: &str) -> String {
    format!(
        "[Unit]\n\
         Description={description}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={}\n\
         Restart=on-failure\n\
         RestartSec=30\n\
         {stopping}\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        systemd_line(args),
    )
}

/// The systemd user units for `kind`, under `unit_dir` (`~/.config/systemd/user`).
pub fn systemd(kind: Kind, inv: &Invocation, unit_dir: &Path) -> Vec<ServiceFile> {
    match kind {
        Kind::Serve => vec![ServiceFile {
            path: unit_dir.join("lomob-serve.service"),
            text: kept_running(
                "lomob receiver: keeps relatives' backups (lomob serve)",
                &inv.args("serve"),
                "# Every object is committed by a rename: stopping at any moment loses nothing.\n\
                 TimeoutStopSec=15\n",
            ),
        }],
        Kind::Daemon => vec![ServiceFile {
            path: unit_dir.join("lomob.service"),
            text: kept_running(
                "lomob backup daemon: watches the photo library, runs each site's schedule",
                &inv.args("daemon"),
                "# The daemon checkpoints the upload in flight and exits 0 within its stop-timeout.\n\
                 TimeoutStopSec=45\n\
                 KillMode=mixed\n",
            ),
        }],
        Kind::Timer => vec![
            ServiceFile {
                path: unit_dir.join("lomob-backup.service"),
                text: format!(
                    "[Unit]\n\
                     Description=lomob daily backup: scan the library, sync every site\n\
                     Wants=network-online.target\n\
                     After=network-online.target\n\
                     \n\
                     [Service]\n\
                     # oneshot: the timer never starts a second run while one is going.\n\
                     Type=oneshot\n\
                     ExecStart={}\n\
                     Nice=10\n\
                     IOSchedulingClass=idle\n",
                    systemd_line(&inv.args("backup")),
                ),
            },
            ServiceFile {
                path: unit_dir.join("lomob-backup.timer"),
                text: "[Unit]\n\
                       Description=Run lomob backup daily\n\
                       \n\
                       [Timer]\n\
                       OnCalendar=*-*-* 02:00:00\n\
                       RandomizedDelaySec=15min\n\
                       # A run missed while the machine was off runs once at the next boot.\n\
                       Persistent=true\n\
                       \n\
                       [Install]\n\
                       WantedBy=timers.target\n"
                    .into(),
            },
        ],
    }
}

/// The launchd agent (`~/Library/LaunchAgents/org.lomob.daemon.plist`).
pub fn launchd(kind: Kind, inv: &Invocation, agents_dir: &Path, log_dir: &Path) -> ServiceFile {
    let (label, command) = match kind {
        Kind::Daemon => ("org.lomob.daemon", "daemon"),
        Kind::Timer => ("org.lomob.backup", "backup"),
        Kind::Serve => ("org.lomob.serve", "serve"),
    };
    let args: String = inv
        .args(command)
        .iter()
        .map(|a| format!("    <string>{}</string>\n", xml(a)))
        .collect();
    let when = match kind {
        Kind::Daemon | Kind::Serve => "  <key>RunAtLoad</key>\n  <true/>\n  <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n".to_string(),
        // launchd runs a calendar job missed during sleep when the machine wakes.
        Kind::Timer => "  <key>StartCalendarInterval</key>\n  <dict>\n    <key>Hour</key>\n    <integer>2</integer>\n    <key>Minute</key>\n    <integer>0</integer>\n  </dict>\n".to_string(),
    };
    ServiceFile {
        path: agents_dir.join(format!("{label}.plist")),
        text: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <plist version=\"1.0\">\n<dict>\n  <key>Label</key>\n  <string>{label}</string>\n  <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n{when}  <key>ProcessType</key>\n  <string>Background</string>\n  <key>StandardErrorPath</key>\n  <string>{}</string>\n</dict>\n</plist>\n",
            xml(&log_dir.join(format!("{label}.log")).display().to_string())
        ),
    }
}

/// The Task Scheduler task (import with `schtasks /Create /XML FILE /TN lomob`).
pub fn task_scheduler(kind: Kind, inv: &Invocation, dir: &Path) -> ServiceFile {
    let args = inv.args(match kind {
        Kind::Daemon => "daemon",
        Kind::Timer => "backup",
        Kind::Serve => "serve",
    });
    let quoted: Vec<String> = args[1..]
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.clone()
            }
        })
        .collect();
    let trigger = match kind {
        Kind::Daemon | Kind::Serve => "    <LogonTrigger>\n      <Enabled>true</Enabled>\n    </LogonTrigger>\n",
        Kind::Timer => "    <CalendarTrigger>\n      <StartBoundary>2026-01-01T02:00:00</StartBoundary>\n      <Enabled>true</Enabled>\n      <ScheduleByDay>\n        <DaysInterval>1</DaysInterval>\n      </ScheduleByDay>\n    </CalendarTrigger>\n",
    };
    let limit = match kind {
        Kind::Daemon | Kind::Serve => "PT0S",
        Kind::Timer => "PT23H",
    };
    ServiceFile {
        path: dir.join(match kind {
            Kind::Serve => "lomob-serve.xml",
            Kind::Daemon => "lomob-daemon.xml",
            Kind::Timer => "lomob-backup.xml",
        }),
        text: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n\
             <Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\n\
             \x20 <RegistrationInfo>\n    <Description>lomob: off-site backup of the photo library</Description>\n  </RegistrationInfo>\n\
             \x20 <Triggers>\n{trigger}  </Triggers>\n\
             \x20 <Settings>\n    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>\n    <StartWhenAvailable>true</StartWhenAvailable>\n    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>\n    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>\n    <ExecutionTimeLimit>{limit}</ExecutionTimeLimit>\n    <RestartOnFailure>\n      <Interval>PT1M</Interval>\n      <Count>3</Count>\n    </RestartOnFailure>\n  </Settings>\n\
             \x20 <Actions Context=\"Author\">\n    <Exec>\n      <Command>{}</Command>\n      <Arguments>{}</Arguments>\n    </Exec>\n  </Actions>\n\
             </Task>\n",
            xml(&args[0]),
            xml(&quoted.join(" "))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Invocation {
        Invocation {
            exe: "/usr/local/bin/lomob".into(),
            config: vec!["/home/me/My Config/lomob.toml".into()],
            extra: Vec::new(),
            db: None,
        }
    }

    #[test]
    fn systemd_units_restart_the_daemon_and_catch_up_the_timer() {
        let f = systemd(Kind::Daemon, &inv(), Path::new("/u"));
        assert_eq!(f[0].path, Path::new("/u/lomob.service"));
        assert!(f[0].text.contains("Restart=on-failure"));
        assert!(f[0].text.contains(
            "ExecStart=\"/usr/local/bin/lomob\" \"--config\" \"/home/me/My Config/lomob.toml\" \"--no-progress\" \"daemon\""
        ));
        let t = systemd(Kind::Timer, &inv(), Path::new("/u"));
        assert!(t[1].text.contains("Persistent=true"));
        assert!(t[0].text.contains("Type=oneshot"));
        assert!(t[0].text.contains("\"backup\""));
    }

    #[test]
    fn the_receiver_runs_as_its_own_service_on_every_system() {
        let mut i = inv();
        i.extra = vec![
            "--root".into(),
            "/srv/lomob".into(),
            "--listen".into(),
            "0.0.0.0:8443".into(),
        ];
        let units = systemd(Kind::Serve, &i, Path::new("/u"));
        assert_eq!(units[0].path, Path::new("/u/lomob-serve.service"));
        assert!(
            units[0].text.contains("\"--no-progress\" \"serve\" \"--root\" \"/srv/lomob\" \"--listen\" \"0.0.0.0:8443\""),
            "{}",
            units[0].text
        );
        let plist = launchd(Kind::Serve, &i, Path::new("/a"), Path::new("/l"));
        assert!(plist.path.ends_with("org.lomob.serve.plist"));
        assert!(plist
            .text
            .contains("<string>serve</string>\n    <string>--root</string>"));
        let task = task_scheduler(Kind::Serve, &i, Path::new("C:/d"));
        assert!(task.path.ends_with("lomob-serve.xml"));
        assert!(
            task.text
                .contains("serve --root /srv/lomob --listen 0.0.0.0:8443"),
            "{}",
            task.text
        );
    }

    #[test]
    fn launchd_and_task_scheduler_files_are_well_formed() {
        let p = launchd(Kind::Daemon, &inv(), Path::new("/a"), Path::new("/l"));
        assert!(p
            .text
            .contains("<string>/home/me/My Config/lomob.toml</string>"));
        assert!(p.text.contains("<key>KeepAlive</key>"));
        let w = task_scheduler(Kind::Timer, &inv(), Path::new("/w"));
        assert!(w
            .text
            .contains("<StartWhenAvailable>true</StartWhenAvailable>"));
        assert!(w.text.contains("<Arguments>--config &quot;/home/me/My Config/lomob.toml&quot; --no-progress backup</Arguments>"));
        for f in [&p.text, &w.text] {
            assert_eq!(f.matches('<').count(), f.matches('>').count());
        }
        // The task is written in the UTF-16 it declares; the plist in UTF-8.
        let bytes = w.bytes();
        assert_eq!(&bytes[..4], &[0xFF, 0xFE, b'<', 0]);
        let units: Vec<u16> = bytes[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16(&units).unwrap(), w.text);
        assert_eq!(p.bytes(), p.text.as_bytes());
    }
}

//! `lomob daemon`, `lomob service install`, and the other side of the daemon's control
//! socket: a command run while the daemon holds the manifest is sent to the daemon, which
//! runs it and streams its output back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use clap::Parser;

use super::args::{Command, DaemonCommand, ServiceCommand};
use super::{Cli, Context};
use crate::daemon::control::{self, Frame, Sink, Stream};
use crate::daemon::service::{self, Invocation, Kind, ServiceFile};
use crate::daemon::{self, Engine};
use crate::exit::{self, UsageError};
use crate::manifest::Manifest;
use crate::scan::ScanReport;

/// Sends the command to a running daemon when one holds the manifest; `None` when there
/// is none (the command runs here) or the command is not one the daemon runs.
pub fn forward(ctx: &Context, command: &Command) -> anyhow::Result<Option<u8>> {
    let forwardable = matches!(
        command,
        Command::Status { .. }
            | Command::List(_)
            | Command::Cost { .. }
            | Command::Sync(_)
            | Command::Backup(_)
            | Command::Check(_)
            | Command::Scan(_)
            | Command::Daemon {
                action: Some(DaemonCommand::Status | DaemonCommand::Stop)
            }
    );
    if !forwardable || ctx.shared.is_some() {
        return Ok(None);
    }
    let path = control::socket_path(&ctx.db);
    if !control::may_be_listening(&path) {
        return Ok(None);
    }
    // Lossy: a non-UTF-8 word (a path) must not abort the command; the daemon sees U+FFFD.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut out = super::output::stdout();
    let mut err = super::output::stderr();
    let mut said = false;
    let result = control::call(&path, argv, Some(absolute_sources(ctx)), &mut |f| {
        use std::io::Write;
        if !said && !matches!(command, Command::Daemon { .. }) {
            let _ = writeln!(err, "(run by the lomob daemon, which holds the manifest)");
            said = true;
        }
        let _ = match f {
            Frame::Out(s) => out.write_all(s.as_bytes()).and_then(|_| out.flush()),
            Frame::Err(s) | Frame::Progress(s) => err.write_all(s.as_bytes()),
            Frame::Exit(_) => Ok(()),
        };
    });
    match result {
        Ok(code) => Ok(Some(code)),
        // A socket no daemon listens on (it died): run here, where the manifest lock
        // decides.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!(
            "the lomob daemon did not answer on {}: {e}",
            path.display()
        )),
    }
}

pub fn run(ctx: &Context, action: Option<DaemonCommand>) -> anyhow::Result<u8> {
    match action {
        None | Some(DaemonCommand::Run) => {}
        Some(DaemonCommand::Status | DaemonCommand::Stop) => {
            // Reached only when no daemon answered (forward() runs these through it).
            if let Some(v) = daemon::view() {
                super::output::stdout_str(&daemon::render_view(&v, ctx.json))?;
                return Ok(exit::SUCCESS);
            }
            bail!(UsageError(format!(
                "no lomob daemon is running for the manifest {} (start it with `lomob daemon`, or `lomob service install`)",
                ctx.db.display()
            )));
        }
    }
    let socket = control::socket_path(&ctx.db);
    if control::call(
        &socket,
        vec!["lomob".into(), "daemon".into(), "status".into()],
        None,
        &mut |_| {},
    )
    .is_ok()
    {
        super::output::stderr_str(&format!(
            "a lomob daemon is already running for the manifest {} (`lomob daemon status` shows it)\n",
            ctx.db.display()
        ))?;
        return Ok(exit::IN_USE);
    }
    let m = open_waiting(ctx)?;
    let roots = super::scan_cmd::resolve_roots(ctx, &m, &[])?;
    let roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| crate::platform::names::canonical(r).unwrap_or_else(|_| r.clone()))
        .collect();
    let engine = Arc::new(CliEngine {
        db: ctx.db.clone(),
        config: ctx.config.clone(),
        m: m.clone(),
    });
    let opts = daemon::Options {
        config: ctx.config.config.daemon.clone(),
        sources: absolute_sources(ctx),
        sites: ctx
            .config
            .config
            .sites
            .iter()
            .map(|(k, v)| (k.clone(), v.schedule.clone()))
            .collect(),
        roots,
        db: ctx.db.clone(),
    };
    daemon::run(engine, opts)?;
    m.flush()?;
    let _ = std::fs::remove_file(control::socket_path(&ctx.db));
    // Tasks still running after stop-timeout hold threads that cannot be cancelled; the
    // manifest is flushed and every upload is resumable, so end the process here.
    std::process::exit(exit::SUCCESS.into());
}

/// The daemon's manifest page cache: it lives long and mostly waits.
const DAEMON_CACHE: u64 = 16 << 20;

/// Opens the manifest for the daemon, waiting (up to 10 minutes) while another lomob
/// command holds it: a daemon started by the system next to a `lomob status` or a manual
/// backup must not fail for it.
fn open_waiting(ctx: &Context) -> anyhow::Result<Arc<Manifest>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut said = false;
    loop {
        match Manifest::open_with_cache(&ctx.db, DAEMON_CACHE) {
            Ok(m) => {
                m.ensure_complete()?;
                return Ok(Arc::new(m));
            }
            Err(e @ crate::manifest::ManifestError::InUse { .. })
                if std::time::Instant::now() < deadline =>
            {
                if !said {
                    tracing::info!("{e}; the daemon starts when it is free");
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The configuration files in use, absolute (how the daemon and a client compare them).
fn absolute_sources(ctx: &Context) -> Vec<PathBuf> {
    ctx.config
        .sources
        .iter()
        .map(|p| crate::platform::names::canonical(p).unwrap_or_else(|_| p.clone()))
        .collect()
}

/// The engine behind the daemon: the manifest it holds and the CLI's own commands.
struct CliEngine {
    db: PathBuf,
    config: crate::config::LoadedConfig,
    m: Arc<Manifest>,
}

impl CliEngine {
    fn context(&self, json: bool, held_alerts: bool) -> Context {
        Context {
            db: self.db.clone(),
            json,
            progress: false,
            config: self.config.clone(),
            shared: Some(self.m.clone()),
            held_alerts,
        }
    }

    fn scan_options(&self) -> crate::scan::ScanOptions {
        let ctx = self.context(false, false);
        let args = super::args::ScanArgs::default();
        super::scan_cmd::options(&ctx, &args)
    }
}

impl Engine for CliEngine {
    fn command(&self, argv: &[String], sink: Arc<dyn Sink>) -> u8 {
        let cli = match Cli::try_parse_from(argv) {
            Ok(c) => c,
            Err(e) => {
                sink.write(Stream::Err, e.render().to_string().as_bytes());
                return exit::USAGE;
            }
        };
        let ctx = self.context(cli.json, cli.held_alerts);
        super::output::capture(sink.clone(), || match super::dispatch(&ctx, cli.command) {
            Ok(code) => code,
            Err(e) => {
                sink.write(
                    Stream::Err,
                    format!("error: {}\n", super::chain(&e)).as_bytes(),
                );
                exit::code_for(&e)
            }
        })
    }

    fn record(&self, root: &Path, rels: &[Vec<u8>]) -> Result<ScanReport, String> {
        crate::scan::paths::scan_paths(&self.m, root, rels, &self.scan_options())
            .map_err(|e| e.to_string())
    }

    fn scan(&self, roots: &[PathBuf]) -> Result<ScanReport, String> {
        let started = crate::manifest::now();
        let r =
            crate::scan::scan(&self.m, roots, &self.scan_options()).map_err(|e| e.to_string())?;
        super::scan_cmd::record_run(&self.m, started, &r).map_err(|e| e.to_string())?;
        Ok(r)
    }

    fn mark(&self, key: &str) -> Option<i64> {
        self.m.mark(key).ok().flatten()
    }

    fn set_mark(&self, key: &str, at: i64) {
        if let Err(e) = self.m.set_mark(key, at) {
            tracing::error!("cannot record {key} in the manifest: {e}");
        }
    }

    fn alert(&self, source: &str, site: Option<&str>, alert: Option<(String, Vec<String>)>) {
        // Resolving what was never raised would only cost a pass over the alert channels.
        if alert.is_none() && !matches!(self.m.alert_state(source), Ok(Some(_))) {
            return;
        }
        let ctx = self.context(false, false);
        if let Err(e) = super::alerts::daemon_alert(&ctx, &self.m, source, site, alert) {
            tracing::error!("alerts: {e:#}");
        }
    }
}

/// `lomob service install [--print] [--timer] [--system S]`.
pub fn service(ctx: &Context, s: ServiceCommand) -> anyhow::Result<u8> {
    let ServiceCommand::Install {
        print,
        timer,
        system,
        serve,
        serve_root,
        listen,
        quota,
    } = s;
    let kind = match (timer, serve) {
        (_, true) => Kind::Serve,
        (true, false) => Kind::Timer,
        (false, false) => Kind::Daemon,
    };
    let mut extra = Vec::new();
    if serve {
        let root = serve_root.unwrap_or_else(|| ctx.config.data_dir.join("serve"));
        std::fs::create_dir_all(&root)?;
        let root = crate::platform::names::canonical(&root).unwrap_or(root);
        extra = vec![
            "--root".into(),
            root.display().to_string(),
            "--listen".into(),
            listen.to_string(),
        ];
        if let Some(q) = quota {
            extra.extend(["--quota".into(), q.bytes().to_string()]);
        }
    }
    let exe = std::env::current_exe()?;
    let inv = Invocation {
        exe,
        // The service starts elsewhere: absolute paths only.
        config: ctx
            .config
            .sources
            .iter()
            .map(|p| crate::platform::names::canonical(p).unwrap_or_else(|_| p.clone()))
            .collect(),
        db: (ctx.db != ctx.config.data_dir.join("lomob.db")).then(|| ctx.db.clone()),
        extra,
    };
    let system = system.unwrap_or_else(|| {
        if cfg!(target_os = "macos") {
            "launchd".into()
        } else if cfg!(windows) {
            "windows".into()
        } else {
            "systemd".into()
        }
    });
    let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("."));
    let (files, next): (Vec<ServiceFile>, String) = match system.as_str() {
        "systemd" => {
            let dir = dirs::config_dir()
                .unwrap_or_else(|| home.join(".config"))
                .join("systemd/user");
            let unit = match kind {
                Kind::Timer => "lomob-backup.timer",
                Kind::Serve => "lomob-serve.service",
                Kind::Daemon => "lomob.service",
            };
            (
                service::systemd(kind, &inv, &dir),
                format!("systemctl --user daemon-reload && systemctl --user enable --now {unit}\n(to keep it running while you are logged out: loginctl enable-linger $USER)"),
            )
        }
        "launchd" => {
            let f = service::launchd(
                kind,
                &inv,
                &home.join("Library/LaunchAgents"),
                &home.join("Library/Logs"),
            );
            let next = format!("launchctl bootstrap gui/$(id -u) {}", f.path.display());
            (vec![f], next)
        }
        _ => {
            let f = service::task_scheduler(kind, &inv, &ctx.config.data_dir);
            let name = if serve { "lomob-serve" } else { "lomob" };
            let next = format!("schtasks /Create /XML \"{}\" /TN {name}", f.path.display());
            (vec![f], next)
        }
    };
    let mut out = super::output::stdout();
    use std::io::Write;
    for f in &files {
        if print {
            writeln!(out, "# {}\n{}", f.path.display(), f.text)?;
        } else {
            if let Some(dir) = f.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&f.path, f.bytes())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.path.display()))?;
            writeln!(out, "wrote {}", f.path.display())?;
        }
    }
    writeln!(
        out,
        "{}enable it with:\n  {next}",
        if print {
            "# after writing these files, "
        } else {
            ""
        }
    )?;
    Ok(exit::SUCCESS)
}

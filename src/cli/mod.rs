//! The command-line edge: parse arguments, load the configuration, run one command, print
//! its result, and turn errors into messages and documented exit codes. `anyhow` is used
//! only here; the engine's modules return typed errors.

mod alerts;
mod args;
mod check_cmd;
mod cost_cmd;
mod daemon_cmd;
mod iso_cmd;
mod key_cmd;
mod list;
mod logging;
mod manifest_cmd;
mod output;
mod restore_cmd;
mod scan_cmd;
mod serve_cmd;
mod site;
mod site_auth;
mod site_pair;
mod site_test;
mod status;
mod sync_cmd;
mod tree;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

pub use args::Cli;
use args::Command;

use crate::config::{self, LoadedConfig};
use crate::exit;
use crate::manifest::Manifest;

/// What every command gets: resolved global options and the loaded configuration.
pub struct Context {
    pub db: PathBuf,
    pub json: bool,
    pub progress: bool,
    pub config: LoadedConfig,
    /// The manifest the daemon holds, when this command runs inside it for another
    /// process; otherwise each command opens (and locks) the manifest itself.
    pub shared: Option<Arc<Manifest>>,
    /// A scheduled daemon job: failures are alerted by the daemon once retries run out.
    pub held_alerts: bool,
}

impl Context {
    pub fn open_manifest(&self) -> anyhow::Result<Arc<Manifest>> {
        let m = self.open_manifest_for_import()?;
        m.ensure_complete()?;
        Ok(m)
    }

    /// As [`Context::open_manifest`], also when an import did not finish: for the commands
    /// that import, which start such an import over.
    pub fn open_manifest_for_import(&self) -> anyhow::Result<Arc<Manifest>> {
        match &self.shared {
            Some(m) => Ok(m.clone()),
            None => Ok(Arc::new(Manifest::open(&self.db)?)),
        }
    }

    /// The profile of site `name`, or a usage error listing the sites there are.
    pub fn site_config(&self, name: &str) -> anyhow::Result<&crate::config::SiteConfig> {
        let sites = &self.config.config.sites;
        sites.get(name).ok_or_else(|| {
            let known: Vec<&str> = sites.keys().map(String::as_str).collect();
            crate::exit::UsageError(format!(
                "no site named {name:?} in the configuration (sites: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
            .into()
        })
    }
}

/// Runs the program and returns its exit code.
pub fn main() -> ExitCode {
    // As many arenas as cores (at least 2): threads contend little for them, and freed
    // memory is not spread over one arena per thread.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    crate::platform::memory::limit_arenas(cores.max(2));
    let cli = Cli::parse();
    logging::init(cli.log_level);
    match run(cli) {
        Ok(code) => exit::code(code),
        Err(e) if is_broken_pipe(&e) => exit::code(exit::SUCCESS),
        Err(e) => {
            crate::progress::suspend(|| eprintln!("error: {}", chain(&e)));
            exit::code(exit::code_for(&e))
        }
    }
}

/// The error and its causes on one line each, without repeating a cause already included
/// in the message above it.
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str("\n  caused by: ");
            out.push_str(&c);
        }
    }
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let config = config::load(&cli.config)?;
    let db = cli
        .db
        .clone()
        .unwrap_or_else(|| config.data_dir.join("lomob.db"));
    let ctx = Context {
        db,
        json: cli.json,
        progress: !cli.no_progress,
        config,
        shared: None,
        held_alerts: cli.held_alerts,
    };
    if let Some(code) = daemon_cmd::forward(&ctx, &cli.command)? {
        return Ok(code);
    }
    let code = dispatch(&ctx, cli.command)?;
    if crate::manifest::compaction_wanted() {
        // The command wrote much of the manifest over: its file is mostly old versions.
        // What the command freed goes back first, so the copy does not add to its peak.
        crate::platform::memory::release();
        if let Err(e) = Manifest::compact_if_worthwhile(&ctx.db) {
            tracing::warn!("could not compact manifest {}: {e}", ctx.db.display());
        }
    }
    Ok(code)
}

/// Runs one command with a resolved context (also what the daemon does for others).
fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Backup(a) => sync_cmd::backup(ctx, a),
        Command::Sync(a) => sync_cmd::run(ctx, a),
        Command::Scan(a) => scan_cmd::run(ctx, a),
        Command::List(l) => list::run(ctx, l),
        Command::Status { recount } => status::run(ctx, recount),
        Command::Cost { site } => cost_cmd::run(ctx, site),
        Command::Manifest(m) => manifest_cmd::run(ctx, m),
        Command::Check(a) => check_cmd::run(ctx, a),
        Command::Restore(a) => restore_cmd::run(ctx, a),
        Command::Recover(a) => restore_cmd::recover(ctx, a),
        Command::Site(s) => site::run(ctx, s),
        Command::Alert(args::AlertCommand::Test { site }) => alerts::test(ctx, site),
        Command::Iso(i) => iso_cmd::run(ctx, i),
        Command::Daemon { action } => daemon_cmd::run(ctx, action),
        Command::Service(s) => daemon_cmd::service(ctx, s),
        Command::Serve(s) => serve_cmd::run(ctx, s),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into memory first: clap_complete panics on a write error (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "lomob", &mut script);
            output::stdout_str(&String::from_utf8_lossy(&script))?;
            Ok(exit::SUCCESS)
        }
        Command::Key(k) => key_cmd::run(ctx, k),
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut output::stdout())?;
            Ok(exit::SUCCESS)
        }
    }
}

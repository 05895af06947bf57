//! `lomob daemon`: one long-running process per library that watches the roots, records
//! changes as they settle, runs each site's schedule, and answers other lomob commands.
//!
//! Everything the daemon does is a *task*: recording the paths the watcher reported, a
//! scan (at start and every `reconcile-every`, or of a root the watcher cannot cover), or a
//! site's job (sync, check-stage, check-archive, check-local). Tasks run on their own
//! threads; this loop only decides, once a second, what is due. Each site has at most one
//! task at a time and at most `sites-at-once` sites run together; library tasks (recording,
//! scans) run one at a time. A failed job is retried with growing pauses for `retry-for`,
//! then alerted; it never stops later runs. SIGTERM or Ctrl-C stops new work, waits up to
//! `stop-timeout` for the tasks in flight (an archive upload keeps its journal and resumes
//! at the next start), and returns so the caller can flush the manifest and exit 0.
//!
//! The engine behind the tasks (the manifest, the commands, the alerts) is given as an
//! [`Engine`], so this module knows schedules and watching, not the command line.

pub mod control;
pub mod schedule;
pub mod service;
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::config::{DaemonConfig, Schedule, ScheduleConfig};
use crate::scan::ScanReport;
use control::{Sink, Stream};
use schedule::{Decision, Failing, JobKind};
use watch::{Change, RootState, Watch};

/// What the daemon needs from the rest of lomob.
pub trait Engine: Send + Sync + 'static {
    /// Runs a lomob command line in this process (the manifest is the daemon's), printing
    /// to `sink`; returns its exit code.
    fn command(&self, argv: &[String], sink: Arc<dyn Sink>) -> u8;
    /// Records the current state of these paths under `root`.
    fn record(&self, root: &Path, rels: &[Vec<u8>]) -> Result<ScanReport, String>;
    /// A full scan of `roots`.
    fn scan(&self, roots: &[PathBuf]) -> Result<ScanReport, String>;
    fn mark(&self, key: &str) -> Option<i64>;
    fn set_mark(&self, key: &str, at: i64);
    /// Raises (`Some`) or resolves (`None`) the alert `source`.
    fn alert(&self, source: &str, site: Option<&str>, alert: Option<(String, Vec<String>)>);
}

/// Environment variable naming a file that holds seconds to add to the wall clock: tests
/// make the clock jump (a machine that slept) by writing it.
pub const CLOCK_FILE_ENV: &str = "LOMOB_TEST_CLOCK_FILE";

/// The wall clock, in Unix seconds.
pub fn now() -> i64 {
    let offset: i64 = std::env::var_os(CLOCK_FILE_ENV)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    crate::manifest::now() + offset
}

/// Site locks shared by the scheduler and the commands other processes send: one task per
/// site at a time. The empty name is the library (recording and scans).
#[derive(Default)]
pub struct Locks {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

pub const LIBRARY: &str = "";

impl Locks {
    pub fn try_take(&self, names: &[String]) -> bool {
        let Ok(mut held) = self.held.lock() else {
            return false;
        };
        if names.iter().any(|n| held.contains(n)) {
            return false;
        }
        held.extend(names.iter().cloned());
        true
    }

    /// Waits until every one of `names` is free, then takes them all at once (so two
    /// waiters can never hold one each and wait for the other).
    pub fn take(&self, names: &[String]) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        while names.iter().any(|n| held.contains(n)) {
            held = match self.freed.wait(held) {
                Ok(h) => h,
                Err(_) => return,
            };
        }
        held.extend(names.iter().cloned());
    }

    pub fn release(&self, names: &[String]) {
        if let Ok(mut held) = self.held.lock() {
            for n in names {
                held.remove(n);
            }
        }
        self.freed.notify_all();
    }

    pub fn busy(&self, name: &str) -> bool {
        self.held.lock().is_ok_and(|h| h.contains(name))
    }
}

/// What `lomob daemon status` shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct View {
    pub pid: u32,
    pub started: i64,
    pub roots: BTreeMap<PathBuf, RootState>,
    pub pending_changes: usize,
    pub running: Vec<String>,
    pub in_flight: Vec<String>,
    pub last_reconcile: Option<ReconcileResult>,
    pub sites: BTreeMap<String, Vec<JobView>>,
    pub stopping: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    pub job: JobKind,
    pub schedule: String,
    pub next: Option<i64>,
    pub last: Option<LastRun>,
    pub failing: Option<Failing>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastRun {
    pub ended: i64,
    pub exit_code: u8,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReconcileResult {
    pub at: i64,
    /// Changes the full scan found that the watcher had not recorded.
    pub missed: u64,
}

static VIEW: OnceLock<Arc<Mutex<View>>> = OnceLock::new();

/// The running daemon's view, when this process is the daemon.
pub fn view() -> Option<View> {
    VIEW.get().and_then(|v| v.lock().ok().map(|v| v.clone()))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Task {
    Job {
        site: String,
        kind: JobKind,
    },
    Record {
        root: PathBuf,
        rels: Vec<Vec<u8>>,
    },
    Scan {
        roots: Vec<PathBuf>,
        reconcile: bool,
    },
}

impl Task {
    fn locks(&self) -> Vec<String> {
        match self {
            Task::Job {
                kind: JobKind::CheckLocal,
                ..
            } => vec![LIBRARY.to_string()],
            Task::Job { site, .. } => vec![site.clone()],
            _ => vec![LIBRARY.to_string()],
        }
    }

    fn label(&self) -> String {
        match self {
            Task::Job { site, kind } => format!("{} of site {site}", kind.name()),
            Task::Record { root, rels } => {
                format!(
                    "recording {} change(s) under {}",
                    rels.len(),
                    root.display()
                )
            }
            Task::Scan {
                reconcile: true, ..
            } => "reconciliation scan".into(),
            Task::Scan { roots, .. } => format!(
                "scan of {}",
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

enum Event {
    Change(Change),
    Done(Task, Outcome),
    Stop(&'static str),
}

enum Outcome {
    Code(u8, String),
    Scan(Result<ScanReport, String>),
}

pub struct Options {
    pub config: DaemonConfig,
    /// The configuration files the daemon loaded (absolute; empty: the embedded default).
    pub sources: Vec<PathBuf>,
    pub sites: BTreeMap<String, ScheduleConfig>,
    pub roots: Vec<PathBuf>,
    pub db: PathBuf,
}

/// Runs the daemon until it is told to stop. Returns when the tasks in flight have
/// finished or `stop-timeout` has passed.
pub fn run(engine: Arc<dyn Engine>, opts: Options) -> anyhow::Result<()> {
    crate::platform::memory::limit_arenas(2);
    let (tx, rx) = crossbeam_channel::unbounded::<Event>();
    let locks = Arc::new(Locks::default());

    // Watch before the first scan, so nothing that changes during it is missed.
    let (ctx, crx) = crossbeam_channel::unbounded::<Change>();
    let watch = Watch::start(&opts.roots, ctx);
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("watch-events".into())
            .spawn(move || {
                for c in crx {
                    if tx.send(Event::Change(c)).is_err() {
                        return;
                    }
                }
            })?;
    }
    signals(tx.clone())?;

    let view = Arc::new(Mutex::new(View {
        pid: std::process::id(),
        started: now(),
        ..Default::default()
    }));
    let _ = VIEW.set(view.clone());
    let handler = control_handler(
        engine.clone(),
        locks.clone(),
        tx.clone(),
        view.clone(),
        &opts,
    );
    control::serve(&control::socket_path(&opts.db), handler).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the control socket in {}: {e}",
            opts.db.display()
        )
    })?;

    let mut d = Daemon::new(engine, opts, locks, watch, tx, view);
    d.start();
    d.run(rx);
    Ok(())
}

/// Stops the daemon on SIGTERM or SIGINT (Ctrl-C); on Windows on Ctrl-C, Ctrl-Break, the
/// console closing or the system shutting down.
fn signals(tx: Sender<Event>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (Ok(mut term), Ok(mut int)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) else {
                        tracing::error!("cannot listen for SIGTERM and SIGINT; stop the daemon with `lomob daemon stop`");
                        return;
                    };
                    loop {
                        let what = tokio::select! {
                            _ = term.recv() => "SIGTERM",
                            _ = int.recv() => "SIGINT",
                        };
                        if tx.send(Event::Stop(what)).is_err() {
                            return;
                        }
                    }
                }
                #[cfg(windows)]
                {
                    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
                    let (Ok(mut c), Ok(mut b), Ok(mut close), Ok(mut shutdown)) =
                        (ctrl_c(), ctrl_break(), ctrl_close(), ctrl_shutdown())
                    else {
                        tracing::error!("cannot listen for Ctrl-C and Ctrl-Break; stop the daemon with `lomob daemon stop`");
                        return;
                    };
                    loop {
                        let what = tokio::select! {
                            _ = c.recv() => "Ctrl-C",
                            _ = b.recv() => "Ctrl-Break",
                            _ = close.recv() => "console closed",
                            _ = shutdown.recv() => "system shutdown",
                        };
                        if tx.send(Event::Stop(what)).is_err() {
                            return;
                        }
                    }
                }
            })
        })?;
    Ok(())
}

/// The words of a command line from its subcommand on: the program name and the global
/// options before the subcommand (`lomob --no-progress --db D daemon stop`) skipped.
fn command_words(argv: &[String]) -> &[String] {
    const WITH_VALUE: &[&str] = &["--db", "--config", "--log-level", "-l"];
    let mut i = 1;
    while let Some(w) = argv.get(i) {
        if !w.starts_with('-') {
            break;
        }
        i += if WITH_VALUE.contains(&w.as_str()) {
            2
        } else {
            1
        };
    }
    argv.get(i..).unwrap_or_default()
}

/// The sites a command another process sent will touch, so it waits for their tasks.
fn locks_for(argv: &[String], sites: &BTreeMap<String, ScheduleConfig>) -> Vec<String> {
    let word = |w: &str| argv.iter().any(|a| a == w);
    let cmd = command_words(argv)
        .first()
        .map(String::as_str)
        .unwrap_or("");
    let site = argv
        .iter()
        .position(|a| a == "--site")
        .and_then(|i| argv.get(i + 1))
        .cloned()
        .or_else(|| {
            argv.iter()
                .find_map(|a| a.strip_prefix("--site=").map(str::to_string))
        });
    let all: Vec<String> = sites.keys().cloned().collect();
    match cmd {
        "backup" => std::iter::once(LIBRARY.to_string()).chain(all).collect(),
        "scan" => vec![LIBRARY.to_string()],
        "sync" if word("--dry-run") => Vec::new(),
        "sync" | "check" => {
            let mut v: Vec<String> = match (site, word("--all")) {
                (Some(s), _) => vec![s],
                (None, true) => all,
                (None, false) => Vec::new(),
            };
            let parts = ["--stage", "--archive", "--local"];
            if cmd == "check" && (word("--local") || !parts.iter().any(|p| word(p))) {
                v.push(LIBRARY.to_string());
            }
            v
        }
        _ => Vec::new(),
    }
}

fn control_handler(
    engine: Arc<dyn Engine>,
    locks: Arc<Locks>,
    tx: Sender<Event>,
    view: Arc<Mutex<View>>,
    opts: &Options,
) -> Arc<control::Handler> {
    let sites = opts.sites.clone();
    let sources = opts.sources.clone();
    Arc::new(move |req: control::Request, sink: Arc<dyn Sink>| {
        let argv = req.argv;
        let words: Vec<&str> = command_words(&argv).iter().map(String::as_str).collect();
        match words.as_slice() {
            ["daemon", "status", rest @ ..] => {
                let v = view.lock().map(|v| v.clone()).unwrap_or_default();
                let json = rest.contains(&"--json") || argv.iter().any(|a| a == "--json");
                sink.write(Stream::Out, render_view(&v, json).as_bytes());
                return crate::exit::SUCCESS;
            }
            ["daemon", "stop", ..] => {
                let _ = tx.send(Event::Stop("lomob daemon stop"));
                sink.write(
                    Stream::Err,
                    b"the daemon is stopping: it finishes or checkpoints the transfer in flight\n",
                );
                return crate::exit::SUCCESS;
            }
            _ => {}
        }
        // `daemon status` and `daemon stop` above work from any configuration.
        if let Some(theirs) = req.config.as_ref().filter(|c| **c != sources) {
            let show = |v: &[PathBuf]| {
                if v.is_empty() {
                    "the embedded default".to_string()
                } else {
                    v.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            sink.write(
                Stream::Err,
                format!(
                    "the lomob daemon holding this manifest runs with the configuration {}, this command was given {}: run it without --config/LOMOB_CONFIG (or with the daemon's), or stop the daemon first\n",
                    show(&sources),
                    show(theirs)
                )
                .as_bytes(),
            );
            return crate::exit::USAGE;
        }
        let need = locks_for(&argv, &sites);
        if !locks.try_take(&need) {
            let busy: Vec<&str> = need
                .iter()
                .filter(|n| locks.busy(n))
                .map(|n| {
                    if n.is_empty() {
                        "the library"
                    } else {
                        n.as_str()
                    }
                })
                .collect();
            sink.write(
                Stream::Err,
                format!(
                    "waiting for the daemon's run of {} to finish...\n",
                    busy.join(", ")
                )
                .as_bytes(),
            );
            locks.take(&need);
        }
        // Progress of what is in flight, every few seconds, while the command runs.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let (done, sink) = (done.clone(), sink.clone());
            std::thread::spawn(move || {
                let mut waited = Duration::ZERO;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    waited += Duration::from_millis(200);
                    if waited >= Duration::from_secs(3) {
                        waited = Duration::ZERO;
                        for line in crate::progress::active() {
                            sink.write(Stream::Err, format!("  {line}\n").as_bytes());
                        }
                    }
                }
            })
        };
        let code = engine.command(&argv, sink.clone());
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = ticker.join();
        locks.release(&need);
        code
    })
}

fn when(t: Option<i64>) -> String {
    t.map_or("-".into(), crate::manifest::rfc3339)
}

/// `lomob daemon status` as text or JSON.
pub fn render_view(v: &View, json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    }
    let mut s = format!(
        "lomob daemon, pid {}, running since {}{}\n",
        v.pid,
        crate::manifest::rfc3339(v.started),
        if v.stopping { " (stopping)" } else { "" }
    );
    for (root, state) in &v.roots {
        match state {
            RootState::Watching { folders } => s.push_str(&format!(
                "  watching {} ({folders} folders)\n",
                root.display()
            )),
            RootState::Degraded { reason } => s.push_str(&format!(
                "  watcher degraded for {}: {reason}; rescanned every scan-interval instead\n",
                root.display()
            )),
        }
    }
    s.push_str(&format!(
        "  changes waiting to settle: {}\n",
        v.pending_changes
    ));
    if let Some(r) = &v.last_reconcile {
        s.push_str(&format!(
            "  last reconciliation scan: {}, found {} change(s) the watcher had missed\n",
            crate::manifest::rfc3339(r.at),
            r.missed
        ));
    }
    for r in &v.running {
        s.push_str(&format!("  running: {r}\n"));
    }
    for p in &v.in_flight {
        s.push_str(&format!("  in flight: {p}\n"));
    }
    s.push('\n');
    let mut rows =
        vec![["SITE", "JOB", "SCHEDULE", "NEXT RUN", "LAST RUN", "RESULT"].map(String::from)];
    for (site, jobs) in &v.sites {
        for j in jobs {
            let result = match (&j.failing, &j.last) {
                (Some(f), _) => format!(
                    "failing since {} ({} tries, next {}): {}",
                    crate::manifest::rfc3339(f.since),
                    f.attempts,
                    crate::manifest::rfc3339(f.retry_at),
                    f.last_error
                ),
                (None, Some(l)) if l.exit_code == 0 => "ok".into(),
                (None, Some(l)) => format!("exit code {}", l.exit_code),
                (None, None) => "-".into(),
            };
            rows.push([
                site.clone(),
                j.job.name().to_string(),
                j.schedule.clone(),
                when(j.next),
                when(j.last.as_ref().map(|l| l.ended)),
                result,
            ]);
        }
    }
    let mut width = [0usize; 6];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(&format!("{c:w$}  ", w = width[i]));
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

struct Daemon {
    engine: Arc<dyn Engine>,
    opts: Options,
    tz: TimeZone,
    locks: Arc<Locks>,
    watch: Watch,
    /// Changed paths and when their last event came.
    dirty: HashMap<PathBuf, Instant>,
    queue: VecDeque<Task>,
    running: HashSet<Task>,
    failing: HashMap<(String, JobKind), Failing>,
    last: HashMap<(String, JobKind), LastRun>,
    next_cache: HashMap<(String, JobKind), Option<i64>>,
    /// On-change sites and when to sync them.
    stage_at: HashMap<String, i64>,
    degraded_scan: HashMap<PathBuf, Instant>,
    told_degraded: HashSet<PathBuf>,
    tx: Sender<Event>,
    view: Arc<Mutex<View>>,
    /// When a stop was asked for, and the time by which to return regardless.
    stopping: Option<Instant>,
    last_wall: i64,
    last_mono: Instant,
    reconcile_due: i64,
    /// When freed memory was last handed back while idle.
    last_release: Instant,
}

const TICK: Duration = Duration::from_secs(1);
/// While no task runs, freed memory is handed back this often: the manifest's own
/// background work (sled compacts its log when nothing else is written) allocates and
/// frees too, and an idle daemon would otherwise creep upward.
const IDLE_RELEASE: Duration = Duration::from_secs(60);

impl Daemon {
    fn new(
        engine: Arc<dyn Engine>,
        opts: Options,
        locks: Arc<Locks>,
        watch: Watch,
        tx: Sender<Event>,
        view: Arc<Mutex<View>>,
    ) -> Daemon {
        Daemon {
            engine,
            tz: TimeZone::system(),
            locks,
            watch,
            dirty: HashMap::new(),
            queue: VecDeque::new(),
            running: HashSet::new(),
            failing: HashMap::new(),
            last: HashMap::new(),
            next_cache: HashMap::new(),
            stage_at: HashMap::new(),
            degraded_scan: HashMap::new(),
            told_degraded: HashSet::new(),
            last_release: Instant::now(),
            tx,
            view,
            stopping: None,
            opts,
            last_wall: now(),
            last_mono: Instant::now(),
            reconcile_due: 0,
        }
    }

    fn start(&mut self) {
        let watched = self
            .watch
            .roots
            .values()
            .filter(|s| matches!(s, RootState::Watching { .. }))
            .count();
        tracing::info!(
            "lomob daemon ready: watching {watched} of {} root(s), {} site(s); control socket {}",
            self.watch.roots.len(),
            self.opts.sites.len(),
            control::socket_path(&self.opts.db).display()
        );
        self.report_degraded();
        self.queue.push_back(Task::Scan {
            roots: self.opts.roots.clone(),
            reconcile: true,
        });
        // On-change sites sync once at start too: what an earlier run left (an interrupted
        // archive upload, staging cut short by a stop) goes on without waiting for a change.
        let at = now() + self.opts.config.stage_delay.0.as_secs() as i64;
        for (site, s) in &self.opts.sites {
            if s.sync == Schedule::OnChange {
                self.stage_at.insert(site.clone(), at);
            }
        }
    }

    fn run(&mut self, rx: Receiver<Event>) {
        let mut next_tick = Instant::now();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(ev) => self.on_event(ev),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    next_tick = Instant::now() + TICK;
                    self.tick();
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
            if let Some(deadline) = self.stopping {
                if self.running.is_empty() {
                    tracing::info!("lomob daemon stopped");
                    return;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        "stop-timeout reached with {} still running; it is checkpointed and goes on at the next start",
                        self.running.iter().map(Task::label).collect::<Vec<_>>().join(", ")
                    );
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Change(Change::Paths(paths)) => {
                let now = Instant::now();
                for p in paths {
                    self.dirty.insert(p, now);
                }
            }
            Event::Change(Change::Rescan(path)) => {
                let roots = self.roots_of(path.as_deref());
                tracing::warn!("the watcher lost events; rescanning {}", show(&roots));
                self.enqueue(Task::Scan {
                    roots,
                    reconcile: false,
                });
            }
            Event::Change(Change::Broken { root, reason }) => {
                let newly = self.watch.degrade(root.as_deref(), &reason);
                if !newly.is_empty() {
                    self.report_degraded();
                    self.enqueue(Task::Scan {
                        roots: newly,
                        reconcile: false,
                    });
                }
            }
            Event::Stop(why) => {
                if self.stopping.is_none() {
                    tracing::info!(
                        "{why}: stopping; no new work, waiting up to {} for {}",
                        self.opts.config.stop_timeout,
                        if self.running.is_empty() {
                            "nothing".into()
                        } else {
                            self.running
                                .iter()
                                .map(Task::label)
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    );
                    self.stopping = Some(Instant::now() + self.opts.config.stop_timeout.0);
                    self.queue.clear();
                    if let Ok(mut v) = self.view.lock() {
                        v.stopping = true;
                    }
                }
            }
            Event::Done(task, outcome) => self.done(task, outcome),
        }
    }

    fn roots_of(&self, path: Option<&Path>) -> Vec<PathBuf> {
        self.opts
            .roots
            .iter()
            .filter(|r| path.is_none_or(|p| p.starts_with(r)))
            .cloned()
            .collect()
    }

    /// Says once, and alerts, for each root the watcher does not cover.
    fn report_degraded(&mut self) {
        for (root, reason) in self.watch.degraded() {
            if self.told_degraded.insert(root.clone()) {
                tracing::warn!(
                    "watcher degraded for {}: {reason}; it is rescanned every {} instead",
                    root.display(),
                    self.opts.config.scan_interval
                );
                self.engine.alert(
                    &format!("watch:{}", root.display()),
                    None,
                    Some((
                        format!("lomob: the daemon cannot watch {}", root.display()),
                        vec![
                            format!("{reason}."),
                            format!(
                                "It is rescanned every {} instead (scan-interval in [daemon]), so changes are found later, not lost.",
                                self.opts.config.scan_interval
                            ),
                        ],
                    )),
                );
                self.degraded_scan.insert(root, Instant::now());
            }
        }
    }

    fn enqueue(&mut self, t: Task) {
        if self.stopping.is_some() {
            return;
        }
        if self.running.contains(&t) || self.queue.contains(&t) {
            tracing::info!(
                "{}: already running or waiting; this run is skipped",
                t.label()
            );
            return;
        }
        self.queue.push_back(t);
    }

    fn tick(&mut self) {
        if self.running.is_empty() && self.last_release.elapsed() >= IDLE_RELEASE {
            crate::platform::memory::release();
            self.last_release = Instant::now();
        }
        let now = now();
        // A wall clock that moved much further than the monotonic one: the machine slept
        // (or the clock was set). Due times are taken from the wall clock, so what was
        // missed runs now, once.
        let mono = self.last_mono.elapsed().as_secs() as i64;
        if now - self.last_wall > mono + 60 {
            tracing::info!(
                "the clock jumped forward by {} s (the machine slept?); missed runs go now, once each",
                now - self.last_wall - mono
            );
        }
        self.last_wall = now;
        self.last_mono = Instant::now();
        if self.stopping.is_none() {
            self.settle();
            self.schedules(now);
            self.degraded_rescans();
            if self.reconcile_due > 0 && now >= self.reconcile_due {
                self.reconcile_due = 0;
                self.enqueue(Task::Scan {
                    roots: self.opts.roots.clone(),
                    reconcile: true,
                });
            }
            self.dispatch();
        }
        self.update_view(now);
    }

    /// Hands the paths that have been quiet for `settle` to a recording task, per root.
    fn settle(&mut self) {
        if self.locks.busy(LIBRARY) || self.queue.iter().any(|t| matches!(t, Task::Record { .. })) {
            return;
        }
        let settle = self.opts.config.settle.0;
        let wall = std::time::SystemTime::now();
        let ready: Vec<PathBuf> = self
            .dirty
            .iter()
            .filter(|(p, t)| {
                t.elapsed() >= settle
                    // Still being written without events (some writers): wait for its
                    // modification time to be as old as the settle time.
                    && std::fs::symlink_metadata(p)
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .and_then(|m| wall.duration_since(m).ok())
                        .is_none_or(|age| age >= settle || !p.is_file())
            })
            .map(|(p, _)| p.clone())
            .collect();
        if ready.is_empty() {
            return;
        }
        let mut by_root: BTreeMap<PathBuf, Vec<Vec<u8>>> = BTreeMap::new();
        for p in ready {
            self.dirty.remove(&p);
            let Some(root) = self
                .opts
                .roots
                .iter()
                .filter(|r| p.starts_with(r))
                .max_by_key(|r| r.as_os_str().len())
            else {
                continue;
            };
            let Ok(rel) = p.strip_prefix(root) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            by_root
                .entry(root.clone())
                .or_default()
                .push(rel_bytes(rel));
        }
        for (root, rels) in by_root {
            self.queue.push_back(Task::Record { root, rels });
        }
    }

    fn schedules(&mut self, now: i64) {
        let jitter = self.opts.config.jitter.0;
        let sites: Vec<(String, ScheduleConfig)> = self
            .opts
            .sites
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (site, sched) in sites {
            for kind in JobKind::ALL {
                let key = (site.clone(), kind);
                if let Some(f) = self.failing.get(&key) {
                    if now >= f.retry_at && !self.is_active(&site, kind) {
                        tracing::info!(
                            "retrying the {} of site {site} (try {})",
                            kind.name(),
                            f.attempts + 1
                        );
                        self.enqueue(Task::Job {
                            site: site.clone(),
                            kind,
                        });
                    }
                    continue;
                }
                let s = kind.schedule(&sched);
                if s == Schedule::OnChange {
                    // Not while the library is being scanned or recorded: the sync then
                    // starts from the files as they are now.
                    let library_busy = self.locks.busy(LIBRARY)
                        || self
                            .queue
                            .iter()
                            .any(|t| t.locks().iter().any(|l| l == LIBRARY));
                    if !library_busy && self.stage_at.get(&site).is_some_and(|t| now >= *t) {
                        self.stage_at.remove(&site);
                        self.enqueue(Task::Job {
                            site: site.clone(),
                            kind,
                        });
                    }
                    continue;
                }
                let off = schedule::offset(&site, kind, jitter);
                let mark_key = kind.mark_key(&site);
                match schedule::decide(s, self.engine.mark(&mark_key), now, off, &self.tz, TICK) {
                    Decision::Wait => {}
                    Decision::Start(due) => self.engine.set_mark(&mark_key, due),
                    Decision::Run { due, late } => {
                        if self.is_active(&site, kind) {
                            continue;
                        }
                        if late {
                            tracing::info!(
                                "the {} of site {site} due at {} was missed (machine off or asleep): running it now, once",
                                kind.name(),
                                crate::manifest::rfc3339(due)
                            );
                        }
                        self.enqueue(Task::Job {
                            site: site.clone(),
                            kind,
                        });
                    }
                }
            }
        }
    }

    fn is_active(&self, site: &str, kind: JobKind) -> bool {
        let t = Task::Job {
            site: site.to_string(),
            kind,
        };
        self.running.contains(&t) || self.queue.contains(&t)
    }

    fn degraded_rescans(&mut self) {
        let every = self.opts.config.scan_interval.0;
        let due: Vec<PathBuf> = self
            .degraded_scan
            .iter()
            .filter(|(_, t)| t.elapsed() >= every)
            .map(|(r, _)| r.clone())
            .collect();
        for r in due {
            self.degraded_scan.insert(r.clone(), Instant::now());
            self.enqueue(Task::Scan {
                roots: vec![r],
                reconcile: false,
            });
        }
    }

    /// Starts what can start: one task per site, `sites-at-once` sites, one library task.
    fn dispatch(&mut self) {
        let mut i = 0;
        while i < self.queue.len() {
            let sites_running = self
                .running
                .iter()
                .filter(|t| matches!(t, Task::Job { kind, .. } if *kind != JobKind::CheckLocal))
                .count();
            let t = &self.queue[i];
            let is_site_job = matches!(t, Task::Job { kind, .. } if *kind != JobKind::CheckLocal);
            if is_site_job && sites_running >= self.opts.config.sites_at_once.max(1) {
                i += 1;
                continue;
            }
            let locks = t.locks();
            if !self.locks.try_take(&locks) {
                i += 1;
                continue;
            }
            let Some(t) = self.queue.remove(i) else {
                break;
            };
            self.running.insert(t.clone());
            tracing::info!("starting the {}", t.label());
            let (engine, tx, lock_set) = (self.engine.clone(), self.tx.clone(), self.locks.clone());
            let spawned = std::thread::Builder::new()
                .name("task".into())
                .spawn(move || {
                    let outcome = run_task(&*engine, &t);
                    lock_set.release(&t.locks());
                    let _ = tx.send(Event::Done(t, outcome));
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a thread for a task: {e}");
                self.locks.release(&locks);
            }
        }
    }

    fn done(&mut self, task: Task, outcome: Outcome) {
        self.running.remove(&task);
        if self.running.is_empty() {
            crate::platform::memory::release();
        }
        let now = now();
        match (&task, outcome) {
            (Task::Job { site, kind }, Outcome::Code(code, output)) => {
                let key = (site.clone(), *kind);
                self.last.insert(
                    key.clone(),
                    LastRun {
                        ended: now,
                        exit_code: code,
                    },
                );
                let first_line = output
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .to_string();
                // Partial (unreadable files) and integrity findings are results, alerted by
                // the command itself; a usage error will not fix itself by retrying.
                let retry = !matches!(
                    code,
                    crate::exit::SUCCESS
                        | crate::exit::PARTIAL
                        | crate::exit::INTEGRITY
                        | crate::exit::USAGE
                );
                tracing::info!(
                    "the {} of site {site} ended with exit code {code}{}",
                    kind.name(),
                    if output.trim().is_empty() {
                        String::new()
                    } else {
                        format!(":\n{}", output.trim_end())
                    }
                );
                if retry {
                    let cfg = &self.opts.config;
                    match schedule::after_failure(
                        self.failing.get(&key),
                        now,
                        first_line.clone(),
                        cfg.retry_first.0,
                        cfg.retry_for.0,
                    ) {
                        Some(f) => {
                            tracing::warn!(
                                "the {} of site {site} failed; retrying at {}",
                                kind.name(),
                                crate::manifest::rfc3339(f.retry_at)
                            );
                            self.failing.insert(key, f);
                            return;
                        }
                        None => {
                            let f = self.failing.remove(&key);
                            let since = f.as_ref().map_or(now, |f| f.since);
                            self.engine.alert(
                                &format!("{}:{site}", if *kind == JobKind::Sync { "sync" } else { "daemon-check" }),
                                Some(site),
                                Some((
                                    format!("lomob: the {} of site {site} kept failing", kind.name()),
                                    vec![
                                        format!(
                                            "It failed {} times since {}; the last error: {first_line}",
                                            f.as_ref().map_or(1, |f| f.attempts + 1),
                                            crate::manifest::rfc3339(since)
                                        ),
                                        "The daemon tries again at the next scheduled time; `lomob daemon status` shows it.".into(),
                                    ],
                                )),
                            );
                        }
                    }
                } else {
                    self.failing.remove(&key);
                }
                self.handled(site, *kind, now);
            }
            (Task::Record { root, .. }, Outcome::Scan(r)) => match r {
                Ok(r) => {
                    tracing::info!(
                        "recorded under {}: {} new, {} changed, {} deleted, {} renamed",
                        root.display(),
                        r.new,
                        r.changed,
                        r.deleted,
                        r.renamed
                    );
                    self.after_scan(&r, &format!("watch-record:{}", root.display()));
                }
                Err(e) => tracing::error!("recording changes under {}: {e}", root.display()),
            },
            (Task::Scan { roots, reconcile }, Outcome::Scan(r)) => match r {
                Ok(r) => {
                    let missed = r.new + r.changed + r.deleted;
                    if *reconcile {
                        if missed > 0 && !self.watch.degraded().is_empty() {
                            tracing::info!("scan: {missed} change(s) recorded");
                        } else if missed > 0 {
                            tracing::warn!(
                                "reconciliation scan: the watcher had missed {missed} change(s) ({} new, {} changed, {} deleted); recorded now",
                                r.new, r.changed, r.deleted
                            );
                        } else {
                            tracing::info!("reconciliation scan: nothing missed");
                        }
                        if let Ok(mut v) = self.view.lock() {
                            v.last_reconcile = Some(ReconcileResult { at: now, missed });
                        }
                        self.engine.set_mark("daemon/reconcile", now);
                        self.reconcile_due =
                            now + self.opts.config.reconcile_every.0.as_secs() as i64;
                    } else {
                        tracing::info!("scan of {}: {missed} change(s) recorded", show(roots));
                    }
                    self.after_scan(&r, "daemon-scan");
                }
                Err(e) => tracing::error!("scan of {}: {e}", show(roots)),
            },
            _ => {}
        }
    }

    /// A job ran (or gave up) for its latest due time: remember it so it does not run again.
    fn handled(&mut self, site: &str, kind: JobKind, now: i64) {
        let Some(sched) = self.opts.sites.get(site) else {
            return;
        };
        let off = schedule::offset(site, kind, self.opts.config.jitter.0);
        if let Some(due) = schedule::due(kind.schedule(sched), now, off, &self.tz) {
            self.engine.set_mark(&kind.mark_key(site), due);
        }
    }

    /// After changes were recorded: schedule on-change syncs, alert held deletions.
    fn after_scan(&mut self, r: &ScanReport, source: &str) {
        if r.new + r.changed + r.deleted > 0 {
            let at = now() + self.opts.config.stage_delay.0.as_secs() as i64;
            for (site, s) in &self.opts.sites {
                if s.sync == Schedule::OnChange {
                    self.stage_at.entry(site.clone()).or_insert(at);
                }
            }
        }
        if r.deletions_held > 0 {
            self.engine.alert(
                source,
                None,
                Some((
                    format!(
                        "lomob: {} deletion(s) held back (a disk or mount seems missing)",
                        r.deletions_held
                    ),
                    r.problems
                        .iter()
                        .map(|p| format!("{}: {}", p.path, p.message))
                        .collect(),
                )),
            );
        } else {
            self.engine.alert(source, None, None);
        }
    }

    fn update_view(&mut self, now: i64) {
        // Next run times change only when one passes: computed again only then.
        let mut next_of = |site: &str, kind: JobKind, s: Schedule| -> Option<i64> {
            let key = (site.to_string(), kind);
            match self.next_cache.get(&key) {
                Some(Some(t)) if now < *t => return Some(*t),
                Some(None) => return None,
                _ => {}
            }
            let off = schedule::offset(site, kind, self.opts.config.jitter.0);
            let n = schedule::next(s, now, off, &self.tz);
            self.next_cache.insert(key, n);
            n
        };
        let mut nexts = HashMap::new();
        for (site, sched) in &self.opts.sites {
            for kind in JobKind::ALL {
                let s = kind.schedule(sched);
                if s != Schedule::OnChange {
                    nexts.insert((site.clone(), kind), next_of(site, kind, s));
                }
            }
        }
        let Ok(mut v) = self.view.lock() else {
            return;
        };
        v.roots = self.watch.roots.clone();
        v.pending_changes = self.dirty.len();
        v.running = self.running.iter().map(Task::label).collect();
        v.in_flight = crate::progress::active();
        v.sites.clear();
        for (site, sched) in &self.opts.sites {
            let jobs = JobKind::ALL
                .iter()
                .map(|&kind| {
                    let s = kind.schedule(sched);
                    let key = (site.clone(), kind);
                    JobView {
                        job: kind,
                        schedule: s.to_string(),
                        next: match s {
                            Schedule::OnChange => self.stage_at.get(site).copied(),
                            _ => nexts.get(&key).copied().flatten(),
                        },
                        last: self.last.get(&key).cloned(),
                        failing: self.failing.get(&key).cloned(),
                    }
                })
                .collect();
            v.sites.insert(site.clone(), jobs);
        }
    }
}

fn run_task(engine: &dyn Engine, t: &Task) -> Outcome {
    match t {
        Task::Job { site, kind } => {
            let out = Arc::new(Collect::default());
            let code = engine.command(&kind.argv(site), out.clone());
            let text = out
                .0
                .lock()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Outcome::Code(code, text)
        }
        Task::Record { root, rels } => Outcome::Scan(engine.record(root, rels)),
        Task::Scan { roots, .. } => Outcome::Scan(engine.scan(roots)),
    }
}

/// Keeps a scheduled job's output for the daemon's log.
#[derive(Default)]
struct Collect(Mutex<Vec<u8>>);

impl Sink for Collect {
    fn write(&self, _stream: Stream, bytes: &[u8]) {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(bytes);
        }
    }
}

fn show(roots: &[PathBuf]) -> String {
    roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn rel_bytes(rel: &Path) -> Vec<u8> {
    crate::platform::names::path_bytes(rel).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_from_other_processes_wait_for_the_sites_they_touch() {
        let mut sites = BTreeMap::new();
        sites.insert("a".to_string(), ScheduleConfig::default());
        sites.insert("b".to_string(), ScheduleConfig::default());
        let argv = |s: &str| -> Vec<String> {
            std::iter::once("lomob")
                .chain(s.split(' '))
                .map(String::from)
                .collect()
        };
        assert_eq!(locks_for(&argv("sync --site a"), &sites), ["a"]);
        assert_eq!(locks_for(&argv("sync --all"), &sites), ["a", "b"]);
        assert!(locks_for(&argv("sync --site a --dry-run"), &sites).is_empty());
        assert_eq!(locks_for(&argv("backup"), &sites), ["", "a", "b"]);
        assert_eq!(locks_for(&argv("check --site=b --stage"), &sites), ["b"]);
        assert_eq!(locks_for(&argv("check --site b"), &sites), ["b", ""]);
        assert!(locks_for(&argv("status"), &sites).is_empty());
        // Global options before the command (found when `lomob --no-progress daemon stop`
        // was taken for some other command, and a sync's locks were skipped).
        assert_eq!(
            locks_for(
                &argv("--no-progress --db /d -l debug sync --site a"),
                &sites
            ),
            ["a"]
        );
        assert_eq!(
            locks_for(&argv("--json --config=/c.toml backup"), &sites),
            ["", "a", "b"]
        );
        assert_eq!(
            command_words(&argv("--no-progress daemon stop")),
            ["daemon", "stop"]
        );
        assert!(command_words(&argv("--db")).is_empty());
    }

    /// An engine whose jobs wait until the test lets them finish.
    struct Blocking {
        started: Mutex<Vec<Vec<String>>>,
        gate: Mutex<bool>,
        opened: Condvar,
    }

    impl Engine for Blocking {
        fn command(&self, argv: &[String], _sink: Arc<dyn Sink>) -> u8 {
            self.started.lock().unwrap().push(argv.to_vec());
            let mut open = self.gate.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            0
        }
        fn record(&self, _: &Path, _: &[Vec<u8>]) -> Result<ScanReport, String> {
            Ok(ScanReport::default())
        }
        fn scan(&self, _: &[PathBuf]) -> Result<ScanReport, String> {
            Ok(ScanReport::default())
        }
        fn mark(&self, _: &str) -> Option<i64> {
            None
        }
        fn set_mark(&self, _: &str, _: i64) {}
        fn alert(&self, _: &str, _: Option<&str>, _: Option<(String, Vec<String>)>) {}
    }

    #[test]
    fn a_site_never_runs_twice_at_once_and_the_bound_holds() {
        let engine = Arc::new(Blocking {
            started: Mutex::new(Vec::new()),
            gate: Mutex::new(false),
            opened: Condvar::new(),
        });
        let mut sites = BTreeMap::new();
        for s in ["a", "b", "c"] {
            sites.insert(s.to_string(), ScheduleConfig::default());
        }
        let config = DaemonConfig {
            sites_at_once: 2,
            ..Default::default()
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let (wtx, _wrx) = crossbeam_channel::unbounded();
        let mut d = Daemon::new(
            engine.clone(),
            Options {
                config,
                sources: Vec::new(),
                sites,
                roots: Vec::new(),
                db: PathBuf::new(),
            },
            Arc::new(Locks::default()),
            Watch::start(&[], wtx),
            tx,
            Arc::new(Mutex::new(View::default())),
        );
        let job = |s: &str| Task::Job {
            site: s.into(),
            kind: JobKind::Sync,
        };
        d.enqueue(job("a"));
        d.enqueue(job("a"));
        assert_eq!(d.queue.len(), 1, "the same run queued twice");
        d.enqueue(Task::Job {
            site: "a".into(),
            kind: JobKind::CheckStage,
        });
        d.enqueue(job("b"));
        d.enqueue(job("c"));
        d.dispatch();
        // a's sync and b's sync run; a's check waits for a, c waits for the bound.
        assert_eq!(d.running.len(), 2, "{:?}", d.running);
        assert!(d.running.contains(&job("a")) && d.running.contains(&job("b")));
        d.enqueue(job("a"));
        assert_eq!(d.queue.len(), 2, "a due run of a running job is skipped");
        *engine.gate.lock().unwrap() = true;
        engine.opened.notify_all();
        while !d.queue.is_empty() || !d.running.is_empty() {
            if let Ok(ev) = rx.recv_timeout(Duration::from_secs(10)) {
                d.on_event(ev);
            }
            d.dispatch();
        }
        assert_eq!(engine.started.lock().unwrap().len(), 4);
    }

    #[test]
    fn locks_are_taken_all_at_once() {
        let l = Arc::new(Locks::default());
        assert!(l.try_take(&["a".into()]));
        assert!(!l.try_take(&["a".into(), "b".into()]));
        assert!(!l.busy("b"), "a failed try takes nothing");
        let l2 = l.clone();
        let waiter = std::thread::spawn(move || {
            l2.take(&["a".into(), "b".into()]);
            l2.release(&["a".into(), "b".into()]);
        });
        l.release(&["a".into()]);
        waiter.join().unwrap();
        assert!(l.try_take(&["a".into(), "b".into()]));
    }
}

//! Progress for long commands: a live bar on a terminal, a log line every few seconds
//! otherwise (cron mails and systemd journals should not fill with carriage returns).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lomob_backends::ByteSize;

/// The bar currently drawn, so log lines can be printed above it instead of through it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `f` (which writes to stderr) with the active bar, if any, cleared meanwhile.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = ACTIVE.lock().ok().and_then(|g| g.clone());
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    files: AtomicU64,
    bytes: AtomicU64,
    start: Instant,
    last: Mutex<Instant>,
}

const LOG_EVERY: Duration = Duration::from_secs(10);
const DRAW_EVERY: Duration = Duration::from_millis(100);

impl Progress {
    /// A bar when stderr is a terminal and `enabled`; log lines otherwise.
    pub fn new(label: &str, enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed_precise}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(label.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            if let Ok(mut g) = ACTIVE.lock() {
                *g = Some(b.clone());
            }
            b
        });
        Progress {
            label: label.to_string(),
            bar,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            start: Instant::now(),
            last: Mutex::new(Instant::now()),
        }
    }

    /// Counts `files` seen and `bytes` processed.
    pub fn add(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let every = if self.bar.is_some() {
            DRAW_EVERY
        } else {
            LOG_EVERY
        };
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() < every {
            return;
        }
        *last = Instant::now();
        drop(last);
        let msg = self.message();
        match &self.bar {
            Some(b) => b.set_message(msg),
            None => tracing::info!("{}: {msg}", self.label),
        }
    }

    fn message(&self) -> String {
        let files = self.files.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        format!(
            "{files} files, {} read, {}/s",
            ByteSize(bytes),
            ByteSize((bytes as f64 / secs) as u64)
        )
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            if let Ok(mut g) = ACTIVE.lock() {
                *g = None;
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

//! Progress for long commands: a live bar on a terminal, a log line every few seconds
//! otherwise (cron mails and systemd journals should not fill with carriage returns).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use lomob_backends::ByteSize;

/// All bars drawn at once (one per site during a sync), so log lines can be printed above
/// them instead of through them.
static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();

fn bars() -> &'static MultiProgress {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)))
}

/// Runs `f` (which writes to stderr) with the bars, if any, cleared meanwhile.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match BARS.get() {
        Some(m) => m.suspend(f),
        None => f(),
    }
}

pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    counts: Arc<Counts>,
    last: Mutex<Instant>,
}

/// What a progress line is made of; shared with [`active`] so the daemon can tell another
/// process what is in flight.
struct Counts {
    label: String,
    files: AtomicU64,
    bytes: AtomicU64,
    start: Instant,
    total: Option<u64>,
}

static ACTIVE: Mutex<Vec<Weak<Counts>>> = Mutex::new(Vec::new());

/// One line per piece of work in flight in this process, such as
/// `parents stage: 12 files, 340 MB read, 25 MB/s of 1.2 GB, about 0m35s left`.
pub fn active() -> Vec<String> {
    let Ok(mut v) = ACTIVE.lock() else {
        return Vec::new();
    };
    v.retain(|w| w.strong_count() > 0);
    v.iter()
        .filter_map(Weak::upgrade)
        .map(|c| format!("{}: {}", c.label, c.message(true)))
        .collect()
}

const LOG_EVERY: Duration = Duration::from_secs(10);
const DRAW_EVERY: Duration = Duration::from_millis(100);

impl Progress {
    /// A spinner when stderr is a terminal and `enabled`; log lines otherwise.
    pub fn new(label: &str, enabled: bool) -> Progress {
        Self::build(label, enabled, None)
    }

    /// A bar towards `total` bytes, with rate and ETA, when stderr is a terminal and
    /// `enabled`; log lines otherwise.
    pub fn with_total(label: &str, enabled: bool, total: u64) -> Progress {
        Self::build(label, enabled, Some(total))
    }

    fn build(label: &str, enabled: bool, total: Option<u64>) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = bars().add(ProgressBar::new(total.unwrap_or(0)));
            // Sizes in the README's units (powers of 1000); the bar takes what the terminal
            // has left, so the line never wraps (80 columns leave it about 15).
            let template = if total.is_some() {
                "{prefix} [{wide_bar}] {done}/{whole} {rate} ETA {eta} {msg}"
            } else {
                "{spinner} {prefix} {msg} [{elapsed_precise}]"
            };
            b.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_spinner())
                    .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}", ByteSize(s.pos()));
                    })
                    .with_key("whole", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}", ByteSize(s.len().unwrap_or(0)));
                    })
                    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}/s", ByteSize(s.per_sec() as u64));
                    })
                    .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let counts = Arc::new(Counts {
            label: label.to_string(),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            start: Instant::now(),
            total,
        });
        if let Ok(mut v) = ACTIVE.lock() {
            v.retain(|w| w.strong_count() > 0);
            v.push(Arc::downgrade(&counts));
        }
        Progress {
            label: label.to_string(),
            bar,
            counts,
            last: Mutex::new(Instant::now()),
        }
    }

    /// Counts `files` seen and `bytes` processed.
    pub fn add(&self, files: u64, bytes: u64) {
        self.counts.files.fetch_add(files, Ordering::Relaxed);
        self.counts.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            if b.length().is_some_and(|l| l > 0) {
                b.inc(bytes);
            }
        }
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
        match &self.bar {
            Some(b) if self.counts.total.is_some() => b.set_message(format!(
                "{} files",
                self.counts.files.load(Ordering::Relaxed)
            )),
            Some(b) => b.set_message(self.counts.message(false)),
            None => tracing::info!("{}: {}", self.label, self.counts.message(true)),
        }
    }
}

impl Counts {
    /// `eta`: say the time left in words (a bar shows its own).
    fn message(&self, eta: bool) -> String {
        let files = self.files.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = bytes as f64 / secs;
        let mut msg = format!(
            "{files} files, {} read, {}/s",
            ByteSize(bytes),
            ByteSize(rate as u64)
        );
        // The bar shows its own ETA; log lines need one in words.
        if let (Some(total), true) = (self.total, eta) {
            if rate > 0.0 && total > bytes {
                let left = ((total - bytes) as f64 / rate) as u64;
                msg.push_str(&format!(
                    " of {}, about {}m{:02}s left",
                    ByteSize(total),
                    left / 60,
                    left % 60
                ));
            }
        }
        msg
    }
}

impl Progress {
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            bars().remove(b);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

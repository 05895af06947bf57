//! Printing results: aligned tables for people, JSON for scripts, dates and sizes in one
//! style everywhere.

use std::io::Write;

use serde::Serialize;

/// A simple text table; numeric-looking columns are right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
            right: vec![false; headers.len()],
        }
    }

    /// Marks columns (by index) as right-aligned.
    pub fn right(mut self, cols: &[usize]) -> Self {
        for &c in cols {
            if c < self.right.len() {
                self.right[c] = true;
            }
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>, out: &mut dyn Write| -> std::io::Result<()> {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = width[i].saturating_sub(c.chars().count());
                let last = i + 1 == cells.len();
                if self.right[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if !last {
                        s.push_str(&" ".repeat(pad));
                    }
                }
                if !last {
                    s.push_str("  ");
                }
            }
            writeln!(out, "{}", s.trim_end())
        };
        line(self.headers.clone(), out)?;
        for r in &self.rows {
            line(r.iter().map(String::as_str).collect(), out)?;
        }
        Ok(())
    }
}

/// Where a command's output goes from this thread: the terminal, or, for a command the
/// daemon runs for another process, that process's connection.
pub use crate::daemon::control::{Sink, Stream};

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<std::sync::Arc<dyn Sink>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's command output sent to `sink`.
pub fn capture<R>(sink: std::sync::Arc<dyn Sink>, f: impl FnOnce() -> R) -> R {
    let old = CAPTURE.with(|c| c.replace(Some(sink)));
    let r = f();
    CAPTURE.with(|c| *c.borrow_mut() = old);
    r
}

/// A writer for one of the command's streams.
pub struct Writer(Stream);

impl Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let sink = CAPTURE.with(|c| c.borrow().clone());
        match (sink, self.0) {
            (Some(s), stream) => {
                s.write(stream, b);
                Ok(b.len())
            }
            (None, Stream::Out) => std::io::stdout().lock().write(b),
            (None, Stream::Err) => std::io::stderr().lock().write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.0 {
            Stream::Out => std::io::stdout().flush(),
            Stream::Err => std::io::stderr().flush(),
        }
    }
}

/// The command's standard output (see [`capture`]).
pub fn stdout() -> std::io::BufWriter<Writer> {
    std::io::BufWriter::new(Writer(Stream::Out))
}

/// The command's standard error, for results that are not log lines.
pub fn stderr() -> std::io::LineWriter<Writer> {
    std::io::LineWriter::new(Writer(Stream::Err))
}

/// Prints text on the command's stdout.
pub fn stdout_str(s: &str) -> std::io::Result<()> {
    let mut out = stdout();
    out.write_all(s.as_bytes())?;
    out.flush()
}

/// Prints text on the command's stderr.
pub fn stderr_str(s: &str) -> std::io::Result<()> {
    let mut err = stderr();
    err.write_all(s.as_bytes())?;
    err.flush()
}

/// Prints `v` as pretty JSON on stdout.
pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = stdout();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub use crate::manifest::rfc3339;

/// A path held as raw bytes, shown lossily (invalid UTF-8 becomes U+FFFD).
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

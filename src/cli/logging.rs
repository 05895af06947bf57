//! Log output: tracing to stderr, printed above any progress bar rather than through it.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

/// Writes each log line to stderr in one piece, with the progress bar cleared meanwhile.
struct Stderr;

struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        crate::progress::suspend(|| {
            let _ = std::io::stderr().write_all(&buf);
        });
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

pub fn init(level: tracing::Level) {
    use std::io::IsTerminal;
    // Our own crates log at the chosen level; dependencies (OpenDAL, sled, the SSH client)
    // only warnings, unless tracing is asked for, when OpenDAL's requests show too.
    let others = if level >= tracing::Level::TRACE {
        "info,opendal=debug"
    } else {
        "warn"
    };
    // s3s reports every refused request (a HEAD of a missing key too) as an error; the
    // receiver logs what matters itself.
    let s3s = if level >= tracing::Level::DEBUG {
        "s3s=info"
    } else {
        "s3s=off"
    };
    // The credential loaders never log: some print a provider (secret included) with `{:?}`.
    let filter = tracing_subscriber::EnvFilter::builder().parse_lossy(format!(
        "{others},reqsign=off,reqsign_core=off,reqsign_aws_v4=off,reqsign_file_read_tokio=off,{s3s},lomob={level},lomob_backends={level}"
    ));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_target(level >= tracing::Level::DEBUG)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}

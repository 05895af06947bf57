//! The daemon's control socket: how other lomob commands reach a running daemon, which
//! holds the manifest. A Unix socket beside the manifest, mode 0600, one JSON request line
//! per connection and JSON frames back: output as it is printed, progress, the exit code.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Where a command's output goes (see `cli::output::capture`).
pub trait Sink: Send + Sync {
    fn write(&self, stream: Stream, bytes: &[u8]);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// One command for the daemon: the words of a lomob command line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub argv: Vec<String>,
    /// The configuration files the client loaded (absolute): the daemon refuses a command
    /// meant for another configuration rather than run it with its own.
    #[serde(default)]
    pub config: Option<Vec<PathBuf>>,
}

/// What the daemon sends back, in order; `Exit` is the last.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Frame {
    Out(String),
    Err(String),
    Progress(String),
    Exit(u8),
}

pub fn socket_path(db: &Path) -> PathBuf {
    db.join("daemon.sock")
}

/// Writes frames to one connection; a client that went away is ignored (the command goes
/// on, its result is in the manifest and the log).
pub struct FrameSink<W: Write + Send>(pub Mutex<W>);

impl<W: Write + Send> FrameSink<W> {
    pub fn send(&self, f: &Frame) {
        if let Ok(mut w) = self.0.lock() {
            let mut line = serde_json::to_vec(f).unwrap_or_default();
            line.push(b'\n');
            let _ = w.write_all(&line);
            let _ = w.flush();
        }
    }
}

impl<W: Write + Send> Sink for FrameSink<W> {
    fn write(&self, stream: Stream, bytes: &[u8]) {
        let s = String::from_utf8_lossy(bytes).into_owned();
        self.send(&match stream {
            Stream::Out => Frame::Out(s),
            Stream::Err => Frame::Err(s),
        });
    }
}

/// Handles one request, writing frames to the sink; returns the exit code.
pub type Handler = dyn Fn(Request, Arc<dyn Sink>) -> u8 + Send + Sync;

#[cfg(unix)]
mod imp {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};

    /// Listens on `path` (replacing a socket left by a daemon that died: this process holds
    /// the manifest, so no other daemon can be using it) until the process ends.
    pub fn serve(path: &Path, handler: Arc<Handler>) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let handler = handler.clone();
                    let _ = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || connection(conn, &*handler));
                }
            })?;
        Ok(())
    }

    fn connection(conn: UnixStream, handler: &Handler) {
        let Ok(read_half) = conn.try_clone() else {
            return;
        };
        let mut line = String::new();
        let mut reader = BufReader::new(read_half);
        // A client that connects and says nothing must not hold a thread forever.
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let sink = Arc::new(FrameSink(Mutex::new(conn)));
        let code = match serde_json::from_str::<Request>(&line) {
            Ok(req) => handler(req, sink.clone()),
            Err(e) => {
                sink.send(&Frame::Err(format!("bad request to the daemon: {e}\n")));
                crate::exit::USAGE
            }
        };
        sink.send(&Frame::Exit(code));
    }

    /// Sends `argv` to the daemon at `path`, passing each frame to `on_frame`; returns the
    /// exit code. Fails when no daemon answers there.
    pub fn call(
        path: &Path,
        argv: Vec<String>,
        config: Option<Vec<PathBuf>>,
        on_frame: &mut dyn FnMut(Frame),
    ) -> std::io::Result<u8> {
        let mut conn = UnixStream::connect(path)?;
        let mut req = serde_json::to_vec(&Request { argv, config })?;
        req.push(b'\n');
        conn.write_all(&req)?;
        for line in BufReader::new(conn).lines() {
            let frame: Frame = serde_json::from_str(&line?)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if let Frame::Exit(code) = frame {
                return Ok(code);
            }
            on_frame(frame);
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection before the command finished (it may have stopped); see its log",
        ))
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;

    const WHY: &str = "the daemon's control channel (a named pipe) is not built for this platform yet: stop the daemon to run other commands";

    pub fn serve(_path: &Path, _handler: Arc<Handler>) -> std::io::Result<()> {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, WHY))
    }

    pub fn call(
        _path: &Path,
        _argv: Vec<String>,
        _config: Option<Vec<PathBuf>>,
        _on_frame: &mut dyn FnMut(Frame),
    ) -> std::io::Result<u8> {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, WHY))
    }
}

pub use imp::{call, serve};

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_its_frames_and_exit_code() {
        let d = tempfile::tempdir().unwrap();
        let path = socket_path(d.path());
        let handler: Arc<Handler> = Arc::new(|req: Request, sink: Arc<dyn Sink>| {
            sink.write(Stream::Out, req.argv.join(" ").as_bytes());
            sink.write(Stream::Err, b"note");
            3
        });
        serve(&path, handler).unwrap();
        let mut frames = Vec::new();
        let code = call(
            &path,
            vec!["lomob".into(), "status".into()],
            None,
            &mut |f| frames.push(f),
        )
        .unwrap();
        assert_eq!(code, 3);
        assert_eq!(
            frames,
            [Frame::Out("lomob status".into()), Frame::Err("note".into())]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

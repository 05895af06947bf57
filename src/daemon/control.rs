//! The daemon's control channel: how other lomob commands reach a running daemon, which
//! holds the manifest. A Unix socket beside the manifest, mode 0600 (on Windows a named pipe
//! that refuses remote clients), one JSON request line per connection and JSON frames back:
//! output as it is printed, progress, the exit code.

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

/// Whether a daemon may be listening for the socket `path`, before trying: its socket file
/// exists. A Windows pipe has no file; trying tells (`NotFound` when none listens).
pub fn may_be_listening(path: &Path) -> bool {
    cfg!(windows) || path.exists()
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

/// Answers one connection: reads the request line from `reader`, runs it, writes the
/// frames to `conn`.
fn connection<W: Write + Send + 'static>(reader: impl std::io::Read, conn: W, handler: &Handler) {
    let mut line = String::new();
    if BufReader::new(reader).read_line(&mut line).is_err() {
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

/// Sends one request on `conn` and passes each frame back to `on_frame` until the exit code.
fn exchange(
    mut conn: impl std::io::Read + Write,
    argv: Vec<String>,
    config: Option<Vec<PathBuf>>,
    on_frame: &mut dyn FnMut(Frame),
) -> std::io::Result<u8> {
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
                        .spawn(move || {
                            // A client that connects and says nothing must not hold a thread
                            // forever.
                            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                            if let Ok(reader) = conn.try_clone() {
                                connection(reader, conn, &*handler);
                            }
                        });
                }
            })?;
        Ok(())
    }

    /// Sends `argv` to the daemon at `path`, passing each frame to `on_frame`; returns the
    /// exit code. Fails when no daemon answers there.
    pub fn call(
        path: &Path,
        argv: Vec<String>,
        config: Option<Vec<PathBuf>>,
        on_frame: &mut dyn FnMut(Frame),
    ) -> std::io::Result<u8> {
        exchange(UnixStream::connect(path)?, argv, config, on_frame)
    }
}

/// Windows: a named pipe, `\\.\pipe\lomob-` and a hash of the socket path (so one per
/// manifest, like the socket), refusing remote clients. The first instance is created with
/// FILE_FLAG_FIRST_PIPE_INSTANCE, so a second daemon on the same manifest cannot take it.
#[cfg(windows)]
mod imp {
    use super::*;
    use std::fs::File;
    use std::os::windows::io::{AsRawHandle, FromRawHandle};
    use windows_sys::Win32::Foundation::{
        GetLastError, ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED, INVALID_HANDLE_VALUE,
    };
    use windows_sys::Win32::Storage::FileSystem::{
        FILE_FLAG_FIRST_PIPE_INSTANCE, PIPE_ACCESS_DUPLEX,
    };
    use windows_sys::Win32::System::Pipes::{
        ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS,
        PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
    };

    /// The pipe that stands for the socket at `path`.
    pub fn pipe_name(path: &Path) -> String {
        let h = xxhash_rust::xxh3::xxh3_64(&crate::platform::names::path_bytes(path));
        format!(r"\\.\pipe\lomob-{h:016x}")
    }

    fn create(name: &[u16], first: bool) -> std::io::Result<File> {
        let mode = PIPE_ACCESS_DUPLEX
            | if first {
                FILE_FLAG_FIRST_PIPE_INSTANCE
            } else {
                0
            };
        // SAFETY: `name` is NUL-terminated UTF-16; the handle returned is owned by the File.
        let h = unsafe {
            CreateNamedPipeW(
                name.as_ptr(),
                mode,
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                PIPE_UNLIMITED_INSTANCES,
                1 << 16,
                1 << 16,
                0,
                std::ptr::null(),
            )
        };
        if h == INVALID_HANDLE_VALUE {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a valid handle that nothing else owns.
        Ok(unsafe { File::from_raw_handle(h as _) })
    }

    /// Listens on the pipe for `path` until the process ends.
    pub fn serve(path: &Path, handler: Arc<Handler>) -> std::io::Result<()> {
        let name: Vec<u16> = pipe_name(path).encode_utf16().chain(Some(0)).collect();
        let mut next = create(&name, true)?;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || loop {
                let pipe = next;
                // SAFETY: a pipe handle we own; blocking mode, no OVERLAPPED.
                let connected = unsafe { ConnectNamedPipe(pipe.as_raw_handle() as _, std::ptr::null_mut()) } != 0
                    || unsafe { GetLastError() } == ERROR_PIPE_CONNECTED;
                next = match create(&name, false) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!("daemon control pipe: {e}; other commands cannot reach the daemon any more");
                        return;
                    }
                };
                if !connected {
                    continue;
                }
                let handler = handler.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        let Ok(reader) = pipe.try_clone() else { return };
                        let writer = pipe.try_clone();
                        if let Ok(w) = writer {
                            connection(reader, w, &*handler);
                        }
                        // Waits until the client has read every frame before the handle goes.
                        let _ = pipe.sync_all();
                    });
            })?;
        Ok(())
    }

    /// Sends `argv` to the daemon for `path`, passing each frame to `on_frame`; returns the
    /// exit code. Fails when no daemon answers there.
    pub fn call(
        path: &Path,
        argv: Vec<String>,
        config: Option<Vec<PathBuf>>,
        on_frame: &mut dyn FnMut(Frame),
    ) -> std::io::Result<u8> {
        let name = pipe_name(path);
        // Every instance busy: another client is being answered; wait a little, boundedly.
        let mut tries = 0;
        let conn = loop {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&name)
            {
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                r => break r?,
            }
        };
        exchange(conn, argv, config, on_frame)
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

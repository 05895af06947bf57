//! The terminal: reading a passphrase without showing it.

/// Reads a line from the terminal with echo off, after showing `prompt`; `None` without a
/// terminal (a service, a pipe) or when the line is empty.
#[cfg(unix)]
pub fn read_hidden_line(prompt: &str) -> Option<Vec<u8>> {
    use std::io::{BufRead as _, Write as _};
    use std::os::fd::AsRawFd as _;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data, filled by tcgetattr on an open descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return None;
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut w = &tty;
    let _ = w.write_all(prompt.as_bytes());
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    let _ = w.write_all(b"\n");
    read.ok()?;
    let line = line.trim_end_matches(['\n', '\r']);
    (!line.is_empty()).then(|| line.as_bytes().to_vec())
}

/// Reads a line from the console with echo off, after showing `prompt`; `None` without a
/// console (a service, a pipe) or when the line is empty.
#[cfg(windows)]
pub fn read_hidden_line(prompt: &str) -> Option<Vec<u8>> {
    use std::io::{BufRead as _, Write as _};
    use std::os::windows::io::AsRawHandle as _;
    use windows_sys::Win32::System::Console::{GetConsoleMode, SetConsoleMode, ENABLE_ECHO_INPUT};
    let input = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("CONIN$")
        .ok()?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open("CONOUT$")
        .ok()?;
    let h = input.as_raw_handle() as _;
    let mut saved = 0u32;
    // SAFETY: console calls on a console handle we own.
    if unsafe { GetConsoleMode(h, &mut saved) } == 0 {
        return None;
    }
    unsafe { SetConsoleMode(h, saved & !ENABLE_ECHO_INPUT) };
    let _ = out.write_all(prompt.as_bytes());
    let mut line = String::new();
    let read = std::io::BufReader::new(&input).read_line(&mut line);
    unsafe { SetConsoleMode(h, saved) };
    let _ = out.write_all(b"\r\n");
    read.ok()?;
    let line = line.trim_end_matches(['\n', '\r']);
    (!line.is_empty()).then(|| line.as_bytes().to_vec())
}

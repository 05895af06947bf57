//! `lomob serve [pair | status]`: the receiver a relative runs (see [`crate::serve`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use lomob_backends::tls::parse_fingerprint;
use lomob_backends::ByteSize;
use serde::Serialize;

use super::args::{ServeArgs, ServeCommand};
use super::Context;
use crate::exit::UsageError;
use crate::serve::code::{Host, PairCode, PIN_PREFIX};
use crate::serve::senders::{self, SenderRecord};
use crate::serve::server::{self, read_listening, Options};
use crate::serve::tls::{state_dir, Identity};

pub fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<u8> {
    let root = args
        .root
        .clone()
        .unwrap_or_else(|| ctx.config.data_dir.join("serve"));
    match args.action {
        None => serve(&root, args.listen, args.quota),
        Some(ServeCommand::Pair {
            name,
            quota,
            address,
            valid_for,
        }) => pair(ctx, &root, &name, quota, address.as_deref(), valid_for.0),
        Some(ServeCommand::Status) => status(ctx, &root),
        Some(ServeCommand::Quota { name, size }) => quota(&root, &name, &size),
    }
}

fn serve(root: &Path, listen: SocketAddr, quota: Option<ByteSize>) -> anyhow::Result<u8> {
    std::fs::create_dir_all(root)
        .with_context(|| format!("cannot create the receiver's folder {}", root.display()))?;
    let rt = super::sync_cmd::runtime()?;
    let opts = Options {
        root: root.to_path_buf(),
        listen,
        default_quota: quota.map(|q| q.bytes()),
    };
    rt.block_on(server::serve(opts, stop_signal(), |r| {
        let free = r
            .free_space()
            .map(|b| format!(", {} free", ByteSize(b)))
            .unwrap_or_default();
        let _ = super::output::stdout_str(&format!(
            "lomob receiver listening on https://{} (certificate {}); {} paired sender(s){free}\n\
             pair a sender: lomob serve --root {} pair --name NAME\n",
            r.address,
            r.fingerprint,
            r.senders(),
            root.display()
        ));
    }))
    .map_err(anyhow::Error::msg)?;
    Ok(0)
}

/// Resolves on Ctrl-C or SIGTERM (on Windows: Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[derive(Serialize)]
struct Issued {
    code: String,
    name: String,
    address: String,
    fingerprint: String,
    quota: Option<u64>,
    expires_in_secs: u64,
}

fn pair(
    ctx: &Context,
    root: &Path,
    name: &str,
    quota: Option<ByteSize>,
    address: Option<&str>,
    valid_for: std::time::Duration,
) -> anyhow::Result<u8> {
    if name.trim().is_empty() || name.len() > 64 {
        return Err(UsageError("--name must be 1 to 64 characters".into()).into());
    }
    let state = state_dir(root);
    let identity = Identity::load_or_create(&state).map_err(anyhow::Error::msg)?;
    let listening = read_listening(root);
    let (host, port) = reachable_address(address, listening.as_ref().map(|l| l.address.as_str()))?;
    let token = senders::issue(&state, name, quota.map(|q| q.bytes()), valid_for)
        .map_err(anyhow::Error::msg)?;
    let mut pin_prefix = [0u8; PIN_PREFIX];
    pin_prefix.copy_from_slice(&identity.fingerprint[..PIN_PREFIX]);
    let code = PairCode {
        host,
        port,
        pin_prefix,
        token,
    };
    let valid = valid_for.min(senders::CODE_LIFETIME).as_secs();
    if ctx.json {
        super::output::json(&Issued {
            code: code.encode(),
            name: name.into(),
            address: code.endpoint(),
            fingerprint: lomob_backends::tls::format_fingerprint(&identity.fingerprint),
            quota: quota.map(|q| q.bytes()),
            expires_in_secs: valid,
        })?;
    } else {
        super::output::stdout_str(&format!(
            "pairing code for {name:?} (valid {} minutes, once):\n\n    {}\n\n\
             on the sender: lomob site pair NAME {}\n\
             it reaches this receiver at {}{}\n",
            valid.div_ceil(60),
            code.encode(),
            code.encode(),
            code.endpoint(),
            if listening.is_none() {
                "; start the receiver (`lomob serve`) before the code expires"
            } else {
                ""
            }
        ))?;
    }
    Ok(0)
}

/// The address to put in a code: the one given, else the receiver's listening address
/// (for 0.0.0.0, this machine's address on its local network).
fn reachable_address(given: Option<&str>, listening: Option<&str>) -> anyhow::Result<(Host, u16)> {
    let listen: Option<SocketAddr> = listening.and_then(|l| l.parse().ok());
    let default_port = listen.map(|l| l.port()).unwrap_or(8443);
    if let Some(g) = given {
        let (h, p) = match g.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && p.parse::<u16>().is_ok() && !h.is_empty() => {
                (h, p.parse::<u16>().unwrap_or(default_port))
            }
            _ => (g, default_port),
        };
        let host = Host::parse(h).map_err(|e| UsageError(format!("--address: {e}")))?;
        return Ok((host, p));
    }
    let Some(listen) = listen else {
        return Err(UsageError(
            "the receiver has never started here, so its address is unknown: start it (`lomob serve`), or give --address HOST:PORT".into(),
        )
        .into());
    };
    if !listen.ip().is_unspecified() {
        return Ok((Host::Ip(listen.ip()), listen.port()));
    }
    match lan_address() {
        Some(ip) => Ok((Host::Ip(ip), listen.port())),
        None => Err(UsageError(format!(
            "the receiver listens on every address ({listen}) and this machine's network address could not be found: give --address HOST:PORT, the address senders reach it at"
        ))
        .into()),
    }
}

/// The address this machine uses to reach the outside: a UDP socket "connected" to a
/// public address (no packet is sent) reports the local address the route would use.
fn lan_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn quota(root: &Path, name: &str, size: &str) -> anyhow::Result<u8> {
    let quota = if size.eq_ignore_ascii_case("none") {
        None
    } else {
        Some(
            size.parse::<ByteSize>()
                .map_err(|e| UsageError(format!("quota {size:?}: {e}")))?
                .bytes(),
        )
    };
    let r = senders::set_quota(&state_dir(root), name, quota).map_err(UsageError)?;
    super::output::stdout_str(&format!(
        "sender {:?}: quota {}
",
        r.name,
        r.quota
            .map(|q| ByteSize(q).to_string())
            .unwrap_or_else(|| "none of its own (the receiver's --quota applies)".into())
    ))?;
    Ok(0)
}

#[derive(Serialize)]
struct SenderStatus {
    name: String,
    bucket: String,
    access_key_id: String,
    stored_bytes: u64,
    quota: Option<u64>,
    paired_at: String,
    last_sync: Option<String>,
}

#[derive(Serialize)]
struct Status {
    root: String,
    listening: Option<String>,
    fingerprint: Option<String>,
    free_bytes: Option<u64>,
    senders: Vec<SenderStatus>,
}

fn status(ctx: &Context, root: &Path) -> anyhow::Result<u8> {
    let state = state_dir(root);
    if !state.exists() {
        return Err(UsageError(format!(
            "{} holds no receiver: start one with `lomob serve --root {}`",
            root.display(),
            root.display()
        ))
        .into());
    }
    let records = senders::read_senders(&state).map_err(anyhow::Error::msg)?;
    let listening = read_listening(root);
    let default_quota = listening.as_ref().and_then(|l| l.default_quota);
    let fingerprint = listening
        .as_ref()
        .map(|l| l.fingerprint.clone())
        .filter(|f| parse_fingerprint(f).is_ok());
    let senders: Vec<SenderStatus> = records
        .iter()
        .map(|r: &SenderRecord| SenderStatus {
            name: r.name.clone(),
            bucket: r.bucket.clone(),
            access_key_id: r.access_key_id.clone(),
            stored_bytes: dir_size(&root.join("buckets").join(&r.bucket)),
            quota: r.quota.or(default_quota),
            paired_at: stamp(r.paired_at),
            last_sync: r.last_write.map(stamp),
        })
        .collect();
    let s = Status {
        root: root.display().to_string(),
        listening: listening.map(|l| l.address),
        fingerprint,
        free_bytes: crate::serve::store::free_space_at(root),
        senders,
    };
    if ctx.json {
        super::output::json(&s)?;
        return Ok(0);
    }
    let mut out = format!(
        "receiver {} (last listening on {}){}\n",
        s.root,
        s.listening.as_deref().unwrap_or("never started"),
        s.free_bytes
            .map(|b| format!(", {} free on its disk", ByteSize(b)))
            .unwrap_or_default()
    );
    if let Some(f) = &s.fingerprint {
        out.push_str(&format!("certificate {f}\n"));
    }
    if s.senders.is_empty() {
        out.push_str("no sender is paired yet: `lomob serve pair --name NAME` makes a code\n");
    }
    for x in &s.senders {
        let quota = x
            .quota
            .map(|q| format!("of {}", ByteSize(q)))
            .unwrap_or_else(|| "(no quota)".into());
        out.push_str(&format!(
            "  {:<16} bucket {:<16} {:>10} {:<14} last sync {}\n",
            x.name,
            x.bucket,
            ByteSize(x.stored_bytes).to_string(),
            quota,
            x.last_sync.as_deref().unwrap_or("never")
        ));
    }
    super::output::stdout_str(&out)?;
    Ok(0)
}

fn stamp(secs: u64) -> String {
    jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// Bytes under `dir` (read-only: a running receiver may be writing there).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

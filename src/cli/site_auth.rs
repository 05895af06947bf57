//! `lomob site auth NAME`: the refresh token of a Google Drive or OneDrive site, obtained
//! by lomob itself with the OAuth 2.0 flow for installed apps (RFC 8252): PKCE (S256), a
//! one-shot redirect listener on 127.0.0.1 with a random port, the `state` checked, a
//! bounded wait. The token goes to the file the profile names, mode 0600; it is never
//! printed or logged.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use lomob_backends::{BackendConfig, Secret};
use sha2::Digest;

use super::args::SiteAuthArgs;
use super::Context;
use crate::exit::{self, UsageError};

/// One provider's endpoints and what to ask for.
struct Provider {
    name: &'static str,
    auth_url: &'static str,
    token_url: &'static str,
    scope: &'static str,
    /// Extra query parameters: Google returns a refresh token only when asked offline
    /// access with a fresh consent.
    extra: &'static [(&'static str, &'static str)],
}

const GOOGLE: Provider = Provider {
    name: "Google",
    auth_url: "https://accounts.google.com/o/oauth2/v2/auth",
    token_url: "https://oauth2.googleapis.com/token",
    scope: "https://www.googleapis.com/auth/drive.file",
    extra: &[("access_type", "offline"), ("prompt", "consent")],
};

const MICROSOFT: Provider = Provider {
    name: "Microsoft",
    auth_url: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
    token_url: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
    scope: "Files.ReadWrite offline_access",
    extra: &[],
};

/// What the flow needs from the site's profile.
struct Client {
    provider: &'static Provider,
    client_id: String,
    client_secret: Option<String>,
    refresh_token: Secret,
    /// `stage` or `archive`.
    part: &'static str,
}

fn client(name: &str, part: &'static str, b: &BackendConfig) -> anyhow::Result<Option<Client>> {
    let reveal = |s: &Secret, what: &str| {
        s.reveal()
            .map_err(|e| anyhow!("site {name}, [{part}] {what}: {e}"))
    };
    Ok(match b {
        BackendConfig::Gdrive(c) => Some(Client {
            provider: &GOOGLE,
            client_id: reveal(&c.client_id, "client-id")?,
            client_secret: Some(reveal(&c.client_secret, "client-secret")?),
            refresh_token: c.refresh_token.clone(),
            part,
        }),
        BackendConfig::Onedrive(c) => Some(Client {
            provider: &MICROSOFT,
            client_id: reveal(&c.client_id, "client-id")?,
            client_secret: c
                .client_secret
                .as_ref()
                .map(|s| reveal(s, "client-secret"))
                .transpose()?,
            refresh_token: c.refresh_token.clone(),
            part,
        }),
        _ => None,
    })
}

pub fn run(ctx: &Context, a: SiteAuthArgs) -> anyhow::Result<u8> {
    let site = ctx.site_config(&a.name)?;
    let mut clients = Vec::new();
    for (part, b) in [("stage", &site.stage), ("archive", &site.archive)] {
        clients.extend(client(&a.name, part, b)?);
    }
    if clients.is_empty() {
        bail!(UsageError(format!(
            "site {} has no gdrive or onedrive backend: `site auth` gets tokens for those only",
            a.name
        )));
    }
    let mut saved_where_configured = true;
    for c in &clients {
        let token = flow(c, &a)?;
        saved_where_configured &= save(ctx, &a.name, c, &token)?;
    }
    if a.no_test || !saved_where_configured {
        return Ok(exit::SUCCESS);
    }
    eprintln!("testing the site with the new token:");
    super::site_test::run(ctx, &a.name)
}

/// 64 characters from the PKCE verifier alphabet (RFC 7636), or hex for `state`.
fn random(len: usize, alphabet: &[u8]) -> anyhow::Result<String> {
    let mut raw = vec![0u8; len];
    rand::fill(&mut raw[..]);
    Ok(raw
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

const VERIFIER_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

/// Runs the browser flow for one client and returns its refresh token.
fn flow(c: &Client, a: &SiteAuthArgs) -> anyhow::Result<String> {
    let verifier = random(64, VERIFIER_CHARS)?;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let state = random(32, b"0123456789abcdef")?;
    let listener =
        TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1 for the redirect")?;
    let redirect = format!("http://127.0.0.1:{}/", listener.local_addr()?.port());
    let auth_url = a.auth_url.as_deref().unwrap_or(c.provider.auth_url);
    let mut url = reqwest::Url::parse(auth_url)
        .map_err(|e| UsageError(format!("authorization URL {auth_url:?}: {e}")))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &c.client_id)
            .append_pair("redirect_uri", &redirect)
            .append_pair("scope", c.provider.scope)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        for (k, v) in c.provider.extra {
            q.append_pair(k, v);
        }
    }
    eprintln!(
        "Open this address in a browser, sign in to {} and allow lomob (for the {} of the site):\n\n  {url}\n\nWaiting up to {} s for the browser to come back to {redirect} ...",
        c.provider.name, c.part, a.timeout_secs
    );
    open_browser(url.as_str());
    let code = wait_for_code(&listener, &state, Duration::from_secs(a.timeout_secs))?;
    let token_url = a.token_url.as_deref().unwrap_or(c.provider.token_url);
    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code),
        ("redirect_uri", redirect),
        ("client_id", c.client_id.clone()),
        ("code_verifier", verifier),
    ];
    if let Some(s) = &c.client_secret {
        form.push(("client_secret", s.clone()));
    }
    let rt = super::sync_cmd::runtime()?;
    let reply: serde_json::Value = rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(token_url)
            .form(&form)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| anyhow!("the token request to {token_url} failed: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!(
                "{} refused the code ({status}): {} {}",
                c.provider.name,
                body["error"].as_str().unwrap_or(""),
                body["error_description"].as_str().unwrap_or("")
            );
        }
        Ok(body)
    })?;
    reply["refresh_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!(
                "{} answered without a refresh token; revoke lomob's access in your account settings and run `lomob site auth` again",
                c.provider.name
            )
        })
}

/// Opens `url` in a browser where there is one to open; the address is printed anyway.
fn open_browser(url: &str) {
    let cmd: Option<(&str, Vec<&str>)> = if cfg!(target_os = "macos") {
        Some(("open", vec![url]))
    } else if cfg!(windows) {
        Some(("cmd", vec!["/C", "start", "", url]))
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some(("xdg-open", vec![url]))
    } else {
        None
    };
    if let Some((prog, args)) = cmd {
        let _ = std::process::Command::new(prog)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// Serves redirects on `listener` until one carries this flow's `state`, or `timeout`.
fn wait_for_code(listener: &TcpListener, state: &str, timeout: Duration) -> anyhow::Result<String> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false)?;
                conn.set_read_timeout(Some(Duration::from_secs(10)))?;
                if let Some(result) = answer(conn, state)? {
                    return result;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!(
                        "timed out after {} s waiting for the browser; nothing was saved. Run the command again and finish the sign-in within the time (or give --timeout-secs)",
                        timeout.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads one request. `None`: not the redirect (a favicon), keep waiting.
fn answer(conn: TcpStream, state: &str) -> anyhow::Result<Option<anyhow::Result<String>>> {
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let url = reqwest::Url::parse(&format!("http://127.0.0.1{target}"))?;
    let get = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    let reply = |mut conn: &TcpStream, status: &str, text: &str| {
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
    };
    if get("state").is_none() && get("error").is_none() {
        reply(&conn, "404 Not Found", "");
        return Ok(None);
    }
    if get("state").as_deref() != Some(state) {
        reply(
            &conn,
            "400 Bad Request",
            "lomob: this answer is not for the sign-in lomob started; nothing was saved.",
        );
        return Ok(Some(Err(anyhow!(
            "the answer's state does not match the one lomob sent (a stale tab, or a forged redirect); nothing was saved. Run the command again"
        ))));
    }
    if let Some(err) = get("error") {
        reply(
            &conn,
            "200 OK",
            "lomob: access was not granted; nothing was saved. You can close this tab.",
        );
        let why = if err == "access_denied" {
            "consent was denied".to_string()
        } else {
            format!("the provider answered {err:?}")
        };
        return Ok(Some(Err(anyhow!(
            "{why} {}; nothing was saved",
            get("error_description").unwrap_or_default()
        ))));
    }
    match get("code") {
        Some(code) if !code.is_empty() => {
            reply(
                &conn,
                "200 OK",
                "lomob: signed in. You can close this tab and go back to the terminal.",
            );
            Ok(Some(Ok(code)))
        }
        _ => {
            reply(
                &conn,
                "400 Bad Request",
                "lomob: the answer carries no code.",
            );
            Ok(Some(Err(anyhow!(
                "the provider's answer carries no code; nothing was saved"
            ))))
        }
    }
}

/// Stores the token where the profile reads it. Returns false when the profile names no
/// file (the token is then written to a new file and the line to add is printed).
fn save(ctx: &Context, site: &str, c: &Client, token: &str) -> anyhow::Result<bool> {
    let (path, configured) = match &c.refresh_token {
        Secret::File { file } => (lomob_backends::secret::expand_home(file), true),
        _ => (
            ctx.config
                .data_dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
                .join("lomob")
                .join(format!("{site}-{}-refresh-token", c.part)),
            false,
        ),
    };
    write_private(&path, token)?;
    if configured {
        eprintln!("saved the refresh token to {} (mode 0600)", path.display());
    } else {
        eprintln!(
            "saved the refresh token to {} (mode 0600). The profile reads it from {} now: set\n  refresh-token = {{ file = \"{}\" }}\nin [sites.{site}] {} to use it",
            path.display(),
            c.refresh_token.describe(),
            path.display(),
            c.part
        );
    }
    Ok(configured)
}

/// Writes `text` to `path` readable by its owner only, through a temporary name.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("partial");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    crate::platform::file::owner_only(&mut opts);
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

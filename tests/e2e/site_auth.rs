//! `lomob site auth NAME` against a small OAuth server on 127.0.0.1 that plays Google or
//! Microsoft: it redirects to lomob's loopback listener with a code (or a refusal) and
//! trades the code for tokens only with the right PKCE verifier. The test plays the
//! browser. Covered: success (token saved 0600 where the profile reads it, never printed),
//! a forged state, a denied consent, and a browser that never comes back.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::Digest;

use crate::support::{read_request, Env};

#[derive(Clone, Copy, PartialEq)]
enum Consent {
    Grant,
    Deny,
    ForgeState,
}

const TOKEN: &str = "RT-very-secret-refresh-token-123";

/// The fake provider; remembers the PKCE challenge of the last authorization request.
struct Provider {
    port: u16,
    token_requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

fn query(s: &str) -> HashMap<String, String> {
    url_pairs(s.split_once('?').map_or("", |(_, q)| q))
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.replace('+', " ");
    let bytes = b.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let h = u8::from_str_radix(&b[i + 1..i + 3], 16).unwrap();
            out.push(h);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

impl Provider {
    fn start(consent: Consent) -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let challenge = Arc::new(Mutex::new(String::new()));
        let token_requests = Arc::new(Mutex::new(Vec::new()));
        let requests = token_requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let Some((line, body)) = read_request(&conn) else {
                    continue;
                };
                let target = line.split_whitespace().nth(1).unwrap().to_string();
                let mut w = conn;
                if target.starts_with("/auth") {
                    let q = query(&target);
                    assert_eq!(q["code_challenge_method"], "S256");
                    assert_eq!(q["response_type"], "code");
                    *challenge.lock().unwrap() = q["code_challenge"].clone();
                    let state = if consent == Consent::ForgeState {
                        "forged".to_string()
                    } else {
                        q["state"].clone()
                    };
                    let answer = if consent == Consent::Deny {
                        "error=access_denied".to_string()
                    } else {
                        "code=THE-CODE".to_string()
                    };
                    let location = format!(
                        "{}?{answer}&state={}",
                        q["redirect_uri"],
                        lomob_backends::uri::encode(&state)
                    );
                    write!(w, "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
                } else {
                    let form = url_pairs(&String::from_utf8(body).unwrap());
                    requests.lock().unwrap().push(form.clone());
                    let want = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(sha2::Sha256::digest(form["code_verifier"].as_bytes()));
                    let ok = form["code"] == "THE-CODE"
                        && form["grant_type"] == "authorization_code"
                        && want == *challenge.lock().unwrap();
                    let (status, json) = if ok {
                        ("200 OK", format!("{{\"access_token\":\"at\",\"refresh_token\":\"{TOKEN}\",\"expires_in\":3600}}"))
                    } else {
                        (
                            "400 Bad Request",
                            "{\"error\":\"invalid_grant\"}".to_string(),
                        )
                    };
                    write!(w, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}", json.len()).unwrap();
                }
            }
        });
        Provider {
            port,
            token_requests,
        }
    }
}

/// A GET with no client library: the status line and the `Location` header.
fn get(url: &str) -> (String, Option<String>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.lines().next().unwrap_or("").to_string();
    let location = text
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .map(str::to_string);
    (status, location)
}

struct Outcome {
    code: Option<i32>,
    stderr: String,
    token_file: std::path::PathBuf,
    /// Keeps the test's folder (and the token file) until the test ends.
    _env: Env,
}

/// Runs `site auth` for a `kind` site; `browser` follows the printed address unless false.
fn auth(kind: &str, consent: Consent, browser: bool) -> (Outcome, Provider) {
    let env = Env::new();
    let provider = Provider::start(consent);
    let token_file = env.path().join("secrets/drive.token");
    let root = env.path().display();
    let cfg = env.config(&format!(
        r#"
[sites.drive]
pack-threshold = "1GB"
stage = {{ kind = "{kind}", client-id = "the-client", client-secret = "the-secret", refresh-token = {{ file = "{}" }} }}
archive = {{ kind = "fs", root = "{root}/archive" }}
"#,
        token_file.display()
    ));
    let mut child = env
        .std_cmd()
        .args([
            "--config",
            &cfg,
            "-l",
            "trace",
            "site",
            "auth",
            "drive",
            "--no-test",
            "--timeout-secs",
        ])
        .arg(if browser { "30" } else { "1" })
        .env(
            "LOMOB_OAUTH_AUTH_URL",
            format!("http://127.0.0.1:{}/auth", provider.port),
        )
        .env(
            "LOMOB_OAUTH_TOKEN_URL",
            format!("http://127.0.0.1:{}/token", provider.port),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut stderr = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        stderr.push_str(&line);
        let url = line.trim().to_string();
        line.clear();
        if url.starts_with("http://127.0.0.1") && browser {
            let (status, location) = get(&url);
            assert!(status.contains("302"), "{status}");
            get(&location.unwrap());
        }
    }
    let status = child.wait().unwrap();
    (
        Outcome {
            code: status.code(),
            stderr,
            token_file,
            _env: env,
        },
        provider,
    )
}

#[test]
fn a_granted_consent_saves_the_refresh_token_privately() {
    for kind in ["gdrive", "onedrive"] {
        let (o, provider) = auth(kind, Consent::Grant, true);
        assert_eq!(o.code, Some(0), "{kind}: {}", o.stderr);
        assert_eq!(std::fs::read_to_string(&o.token_file).unwrap(), TOKEN);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&o.token_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            !o.stderr.contains(TOKEN),
            "the token was printed: {}",
            o.stderr
        );
        assert!(!o.stderr.contains("the-secret"), "{}", o.stderr);
        let reqs = provider.token_requests.lock().unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0]["client_id"], "the-client");
        assert_eq!(reqs[0]["client_secret"], "the-secret");
        assert!(reqs[0]["redirect_uri"].starts_with("http://127.0.0.1:"));
    }
}

#[test]
fn a_forged_state_a_denied_consent_and_a_timeout_save_nothing() {
    let (o, provider) = auth("gdrive", Consent::ForgeState, true);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("state does not match"), "{}", o.stderr);
    assert!(!o.token_file.exists());
    assert!(provider.token_requests.lock().unwrap().is_empty());

    let (o, _) = auth("onedrive", Consent::Deny, true);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("consent was denied"), "{}", o.stderr);
    assert!(!o.token_file.exists());

    let (o, _) = auth("gdrive", Consent::Grant, false);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);
    assert!(!o.token_file.exists());
}

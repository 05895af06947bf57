//! Running `lomob` against the Google Drive and OneDrive protocol fakes
//! (`tests/servers/cloud_fakes.py`, started by `scripts/services.sh` on 127.0.0.1:443).
//!
//! OpenDAL hard-codes the providers' host names, so each `lomob` under test runs in its own
//! mount namespace with the fakes' hosts file bound over `/etc/hosts`
//! (`unshare -m --propagation private`, as root), and trusts the test CA through
//! `SSL_CERT_FILE` (rustls-platform-verifier reads rustls-native-certs on Linux, which
//! honours it). Nothing else on the machine sees the names change.
//!
//! Each test uses its own OAuth client id, which the fakes treat as its own account: its own
//! drive, request log and faults, so tests run at once without seeing each other.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{json, Value};

use super::{service_var, unique, Env};

/// The running fakes, from the variables `scripts/services.sh` writes.
#[derive(Clone)]
pub struct Fakes {
    /// `host:port` of the plain-HTTP control port.
    control: String,
    ca: String,
    hosts: String,
}

impl Fakes {
    /// `None` (the test skips) when the fakes are not running; a failure when
    /// `LOMOB_REQUIRE_SERVICES=1`.
    pub fn get() -> Option<Fakes> {
        let control = service_var("LOMOB_TEST_CLOUD_FAKES")?;
        Some(Fakes {
            control: control.trim_start_matches("http://").to_string(),
            ca: service_var("LOMOB_TEST_CLOUD_CA")?,
            hosts: service_var("LOMOB_TEST_CLOUD_HOSTS")?,
        })
    }

    /// A fresh account on the fakes for this test (its client id is unique to `env`).
    pub fn account(&self, env: &Env, provider: &str) -> Account {
        Account {
            fakes: self.clone(),
            id: format!("{provider}-{}", unique(env)),
        }
    }

    /// `lomob` as [`Env::std_cmd`] makes it, run in a private mount namespace that sees the
    /// fakes' hosts file, trusting the test CA.
    pub fn std_cmd(&self, env: &Env) -> std::process::Command {
        let plain = env.std_cmd();
        let mut c = std::process::Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(&self.hosts)
            .arg(plain.get_program());
        for (k, v) in plain.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = plain.get_current_dir() {
            c.current_dir(d);
        }
        c.env("SSL_CERT_FILE", &self.ca).env_remove("SSL_CERT_DIR");
        c
    }

    pub fn cmd(&self, env: &Env) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.std_cmd(env))
    }

    /// Runs `lomob ARGS --json` in the namespace, asserts the exit code, parses stdout.
    pub fn json(&self, env: &Env, args: &[&str], code: i32) -> Value {
        let out = self.cmd(env).args(args).arg("--json").output().unwrap();
        super::assert_code(&out, code);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(&self.control).expect("the fakes' control port");
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: control\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.contains(" 200 "), "control {path}: {resp}");
        serde_json::from_str(body).unwrap()
    }
}

/// One OAuth client's account on the fakes.
pub struct Account {
    pub fakes: Fakes,
    /// The OAuth client id, which names the account.
    pub id: String,
}

/// One API request the fakes saw.
#[derive(Debug)]
pub struct Seen {
    pub method: String,
    pub host: String,
    pub path: String,
}

impl Account {
    fn post(&self, what: &str, body: Value) -> Value {
        self.fakes.call(
            "POST",
            &format!("/accounts/{}/{what}", self.id),
            Some(&body),
        )
    }

    /// Every request of this account so far, token requests included.
    pub fn requests(&self) -> Vec<Seen> {
        self.fakes
            .call("GET", &format!("/accounts/{}/requests", self.id), None)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| Seen {
                method: r["method"].as_str().unwrap().into(),
                host: r["host"].as_str().unwrap().into(),
                path: r["path"].as_str().unwrap().into(),
            })
            .collect()
    }

    /// The requests that carried content up (uploads and upload fragments).
    pub fn uploads(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.path.starts_with("/upload/")
                    || r.path.starts_with("/__upload/")
                    || (r.method == "PUT" && r.path.contains(":/content"))
            })
            .count()
    }

    /// The requests that downloaded content.
    pub fn downloads(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.contains("alt=media") || r.path.starts_with("/__download/"))
            .count()
    }

    /// Files on the drive: path, size, trashed, md5, sha256, quickXorHash.
    pub fn files(&self) -> Vec<Value> {
        self.fakes
            .call("GET", &format!("/accounts/{}/files", self.id), None)
            .as_array()
            .unwrap()
            .clone()
    }

    /// The next `count` requests whose "METHOD HOST PATH" contains `matching` answer
    /// `status` (with `Retry-After: retry_after` when given).
    pub fn fault(&self, status: u16, count: usize, retry_after: Option<u64>, matching: &str) {
        self.post(
            "fault",
            json!({"status": status, "count": count, "retry_after": retry_after, "match": matching}),
        );
    }

    pub fn expire_tokens(&self) {
        self.post("expire-tokens", json!({}));
    }

    pub fn revoke(&self) {
        self.post("revoke", json!({}));
    }

    pub fn quota(&self, bytes: Option<u64>) {
        self.post("quota", json!({ "bytes": bytes }));
    }

    pub fn empty_trash(&self) {
        self.post("empty-trash", json!({}));
    }

    pub fn page_size(&self, n: usize) {
        self.post("page-size", json!({ "size": n }));
    }

    /// Other bytes of the same size in place of the file at `path` (its hashes follow).
    pub fn alter(&self, path: &str) {
        self.post("alter", json!({ "path": path }));
    }

    /// The next `count` uploads to a path containing `matching` store other bytes of the
    /// same size than were sent (the provider's hashes follow what it stored).
    pub fn corrupt_uploads(&self, count: usize, matching: &str) {
        self.post(
            "corrupt-uploads",
            json!({ "count": count, "match": matching }),
        );
    }

    /// A code the token endpoint will trade for `refresh_token` with the PKCE verifier
    /// matching `challenge`.
    pub fn authcode(&self, code: &str, challenge: &str, refresh_token: &str) {
        self.post(
            "authcode",
            json!({"code": code, "challenge": challenge, "refresh_token": refresh_token}),
        );
    }

    /// The stage section of a profile for this account.
    pub fn stage(&self, provider: &str, extra: &str) -> String {
        format!(
            "{{ kind = \"{provider}\", root = \"/lomob\", client-id = \"{}\", client-secret = \"s3cret\", refresh-token = \"rt-{}\"{extra} }}",
            self.id, self.id
        )
    }
}

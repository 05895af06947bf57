//! The receiver's listener: TLS with the kept certificate, the pairing endpoint, and the S3
//! service for everything else.
//!
//! Pairing is the one request without a signature (the sender has no keys yet): `POST
//! /.lomob/pair` with the code's token. A bucket name never starts with a dot, so the path
//! cannot shadow an S3 request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{Body, S3Result};
use serde::{Deserialize, Serialize};

use super::s3::Receiver;
use super::senders::{PairError, Registry};
use super::store::ObjectStore;
use super::tls::{state_dir, Identity};
use lomob_backends::tls::format_fingerprint;

/// The path of the pairing request.
pub const PAIR_PATH: &str = "/.lomob/pair";
/// What the receiver writes at start for `serve pair` and `serve status` to read.
pub const LISTEN_FILE: &str = "listen.json";

/// The pairing request's body.
#[derive(Serialize, Deserialize)]
pub struct PairRequest {
    /// The code's token, hex.
    pub token: String,
}

/// The pairing answer: all a sender needs to write its site.
#[derive(Serialize, Deserialize)]
pub struct PairAnswer {
    pub name: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `sha256:…` of the certificate, whole (the code carries only its first bytes).
    pub fingerprint: String,
    pub quota: Option<u64>,
}

/// Where a running receiver listens, written at start.
#[derive(Serialize, Deserialize)]
pub struct Listening {
    pub address: String,
    pub pid: u32,
    pub fingerprint: String,
    pub started: u64,
    /// The receiver's `--quota`, for senders paired without their own.
    #[serde(default)]
    pub default_quota: Option<u64>,
}

pub struct Options {
    pub root: PathBuf,
    pub listen: SocketAddr,
    /// The quota of senders paired without one of their own.
    pub default_quota: Option<u64>,
}

/// A started receiver: its address, and the task serving it.
pub struct Running {
    pub address: SocketAddr,
    pub fingerprint: String,
    registry: Arc<Registry>,
    store: Arc<ObjectStore>,
}

impl Running {
    pub fn free_space(&self) -> Option<u64> {
        self.store.free_space()
    }

    pub fn senders(&self) -> usize {
        self.registry.senders().len()
    }
}

struct Auth(Arc<Registry>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.0
            .secret_of(access_key)
            .map(SecretKey::from)
            .ok_or_else(|| {
                s3s::s3_error!(
                    InvalidAccessKeyId,
                    "this access key is not paired with this receiver"
                )
            })
    }
}

/// Opens the root, binds the address, and serves until `shutdown` resolves. `started` is
/// called once the socket listens (the CLI prints the address there).
pub async fn serve(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
    started: impl FnOnce(&Running),
) -> Result<(), String> {
    let state = state_dir(&opts.root);
    std::fs::create_dir_all(&state)
        .map_err(|e| format!("cannot create {}: {e}", state.display()))?;
    // One receiver per root: a second would take the first one's writes in flight for a
    // crash's leftovers and remove them.
    let _lock = lock_root(&state)?;
    let identity = Identity::load_or_create(&state)?;
    let tls = tokio_rustls::TlsAcceptor::from(identity.server_config()?);
    let store = Arc::new(ObjectStore::open(&opts.root).map_err(|e| {
        format!(
            "cannot open the receiver's folder {}: {e}",
            opts.root.display()
        )
    })?);
    let registry = Arc::new(Registry::open(&state)?);
    registry.set_default_quota(opts.default_quota);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let fingerprint = format_fingerprint(&identity.fingerprint);
    write_listening(&state, address, &fingerprint, opts.default_quota)?;

    let mut builder = S3ServiceBuilder::new(Receiver::new(store.clone(), registry.clone()));
    builder.set_auth(Auth(registry.clone()));
    let app = Arc::new(App {
        s3: builder.build(),
        registry: registry.clone(),
        fingerprint: fingerprint.clone(),
    });
    let running = Running {
        address,
        fingerprint,
        registry: registry.clone(),
        store,
    };
    started(&running);

    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let tls = tls.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A client that never finishes its handshake holds nothing for long.
            let stream = match tokio::time::timeout(Duration::from_secs(30), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { app.handle(req).await }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(60))
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    registry.flush()?;
    Ok(())
}

struct App {
    s3: S3Service,
    registry: Arc<Registry>,
    fingerprint: String,
}

impl App {
    async fn handle(
        &self,
        req: http::Request<Incoming>,
    ) -> Result<http::Response<Body>, s3s::HttpError> {
        if req.uri().path() == PAIR_PATH {
            return Ok(self.pair(req).await);
        }
        self.s3.call(req.map(Body::from)).await
    }

    async fn pair(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        use http_body_util::BodyExt as _;
        if req.method() != http::Method::POST {
            return answer(http::StatusCode::METHOD_NOT_ALLOWED, "use POST".into());
        }
        let limited = http_body_util::Limited::new(req.into_body(), 4096);
        let body = match tokio::time::timeout(Duration::from_secs(30), limited.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => return answer(http::StatusCode::BAD_REQUEST, "unreadable request".into()),
        };
        let token = serde_json::from_slice::<PairRequest>(&body)
            .ok()
            .and_then(|r| hex::decode(r.token).ok());
        let Some(token) = token else {
            return answer(
                http::StatusCode::BAD_REQUEST,
                "the request carries no token".into(),
            );
        };
        match self.registry.redeem(&token) {
            Ok(s) => {
                let quota = self.registry.quota_of(&s);
                tracing::info!(name = %s.name, bucket = %s.bucket, "paired a sender");
                let a = PairAnswer {
                    name: s.name,
                    bucket: s.bucket,
                    access_key_id: s.access_key_id,
                    secret_access_key: s.secret_access_key,
                    fingerprint: self.fingerprint.clone(),
                    quota,
                };
                json(http::StatusCode::OK, &a)
            }
            Err(e) => {
                tracing::warn!("refused a pairing request: {e}");
                // Guessing codes one after another gets slow.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let status = match e {
                    PairError::Io(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
                    _ => http::StatusCode::FORBIDDEN,
                };
                answer(status, e.to_string())
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct PairRefusal {
    pub error: String,
}

fn answer(status: http::StatusCode, error: String) -> http::Response<Body> {
    json(status, &PairRefusal { error })
}

fn json<T: Serialize>(status: http::StatusCode, v: &T) -> http::Response<Body> {
    let mut r = http::Response::new(Body::from(serde_json::to_string(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn write_listening(
    state: &Path,
    address: SocketAddr,
    fingerprint: &str,
    default_quota: Option<u64>,
) -> Result<(), String> {
    let l = Listening {
        address: address.to_string(),
        pid: std::process::id(),
        fingerprint: fingerprint.to_string(),
        started: super::senders::now(),
        default_quota,
    };
    let bytes = serde_json::to_vec_pretty(&l).unwrap_or_default();
    crate::platform::file::write_atomic(state, LISTEN_FILE, &bytes, false)
        .map_err(|e| format!("cannot write {}: {e}", state.join(LISTEN_FILE).display()))
}

/// An exclusive lock on `state/lock` (released by the system when the process dies, even
/// after kill -9), holding the owner's pid for the message another start gives.
fn lock_root(state: &Path) -> Result<std::fs::File, String> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = state.join("lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(format!(
                "another `lomob serve` (pid {}) already serves {}: one receiver per folder; stop it first, or give this one its own --root",
                pid.trim(),
                state.parent().unwrap_or(state).display()
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()))
        }
    }
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = writeln!(f, "{}", std::process::id());
    Ok(f)
}

/// Reads what a receiver wrote at its last start.
pub fn read_listening(root: &Path) -> Option<Listening> {
    let bytes = std::fs::read(state_dir(root).join(LISTEN_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

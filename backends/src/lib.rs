//! `lomob-backends`: turns the `stage` or `archive` section of a site profile into a
//! configured [`opendal::Operator`] and says what that backend can do.
//!
//! One folder per backend kind, each with its `config.rs` (the profile section, unknown keys
//! rejected, defaults documented) and a `mod.rs` that builds the operator and describes its
//! [`Capabilities`]. The engine's `Stage` and `Archive` traits work over any of them; this
//! crate knows nothing about the engine (the root crate depends on it, never the reverse).

pub mod capability;
pub mod error;
pub mod oauth;
pub mod object;
pub mod observe;
pub mod quickxor;
pub mod requests;
pub mod secret;
pub mod size;
pub mod storage_class;
pub mod tls;
pub mod transfer;
pub mod uri;

pub mod journal;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub mod fs;
pub mod gdrive;
pub mod glacier;
pub mod onedrive;
pub mod s3;
pub mod sftp;
pub mod webdav;

use opendal::Operator;
use serde::{Deserialize, Serialize};

pub use capability::{Capabilities, ChecksumKind};
pub use error::{BackendError, ErrorKind};
pub use object::ObjectInfo;
pub use requests::{RequestCounters, RequestCounts, RequestType};
pub use secret::Secret;
pub use size::ByteSize;
pub use storage_class::{StorageClass, ThawTier};
pub use transfer::TransferConfig;

/// One backend section of a profile, chosen by its `kind` key.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BackendConfig {
    /// A local disk or a mounted NAS folder.
    Fs(fs::FsConfig),
    /// Any S3-compatible store: AWS, Backblaze B2, Cloudflare R2, MinIO.
    S3(s3::S3Config),
    /// S3 with a cold storage class (Deep Archive by default).
    Glacier(glacier::GlacierConfig),
    /// Google Drive, through an OAuth refresh token.
    Gdrive(gdrive::GdriveConfig),
    /// Microsoft OneDrive, through an OAuth refresh token.
    Onedrive(onedrive::OnedriveConfig),
    /// A relative's machine over SSH (key login).
    Sftp(sftp::SftpConfig),
    /// A WebDAV server, as many NAS boxes offer.
    Webdav(webdav::WebdavConfig),
}

impl BackendConfig {
    /// The `kind` as written in profiles.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Fs(_) => "fs",
            BackendConfig::S3(_) => "s3",
            BackendConfig::Glacier(_) => "glacier",
            BackendConfig::Gdrive(_) => "gdrive",
            BackendConfig::Onedrive(_) => "onedrive",
            BackendConfig::Sftp(_) => "sftp",
            BackendConfig::Webdav(_) => "webdav",
        }
    }

    /// Checks what can be checked without the network or the secrets' values.
    pub fn validate(&self) -> Result<(), BackendError> {
        match self {
            BackendConfig::Fs(c) => c.validate(),
            BackendConfig::S3(c) => c.validate("s3"),
            BackendConfig::Glacier(c) => c.validate(),
            BackendConfig::Gdrive(c) => c.validate(),
            BackendConfig::Onedrive(c) => c.validate(),
            BackendConfig::Sftp(c) => c.validate(),
            BackendConfig::Webdav(c) => c.validate(),
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        match self {
            BackendConfig::Fs(c) => c.capabilities(),
            BackendConfig::S3(c) => c.capabilities(),
            BackendConfig::Glacier(c) => c.capabilities(),
            BackendConfig::Gdrive(c) => c.capabilities(),
            BackendConfig::Onedrive(c) => c.capabilities(),
            BackendConfig::Sftp(c) => c.capabilities(),
            BackendConfig::Webdav(c) => c.capabilities(),
        }
    }

    /// Builds the operator, with the site's transfer settings applied. Reads secrets.
    pub fn operator(&self, transfer: &TransferConfig) -> Result<Operator, BackendError> {
        self.operator_observed(transfer, None)
    }

    /// Like [`BackendConfig::operator`], with every HTTP request it sends (retries
    /// included) reported to `observer`.
    pub fn operator_observed(
        &self,
        transfer: &TransferConfig,
        observer: Option<std::sync::Arc<dyn observe::RequestObserver>>,
    ) -> Result<Operator, BackendError> {
        self.validate()?;
        let op = match self {
            BackendConfig::Fs(c) => c.operator(),
            BackendConfig::S3(c) => c.operator("s3"),
            BackendConfig::Glacier(c) => c.operator(),
            BackendConfig::Gdrive(c) => c.operator(),
            BackendConfig::Onedrive(c) => c.operator(),
            BackendConfig::Sftp(c) => c.operator(),
            BackendConfig::Webdav(c) => c.operator(),
        }?;
        let op = match observer {
            Some(o) => observe::observe(op, o),
            None => op,
        };
        // Under the observer, so throttled requests retried here are counted.
        let op = match self {
            BackendConfig::Gdrive(c) => oauth::wrap(op, c.oauth_client()?, transfer.retries),
            BackendConfig::Onedrive(c) => oauth::wrap(op, c.oauth_client()?, transfer.retries),
            _ => op,
        };
        Ok(transfer.apply(op))
    }
}

/// The checksums a provider computes of every stored file, which OpenDAL's services do not
/// ask for: listed and stated by lomob's own calls through the operator's transport (the
/// operator must be the one [`BackendConfig::operator`] built for the same profile).
pub enum ProviderHashes {
    /// Drive's `sha256Checksum` (and `md5Checksum`).
    Drive(gdrive::DriveHashes),
    /// OneDrive's `quickXorHash`.
    Graph(onedrive::GraphHashes),
}

impl ProviderHashes {
    /// Every file under `prefix`, recursively, with the provider's checksum in
    /// [`ObjectInfo::etag`] (see [`object::provider_sum`]).
    pub async fn list(&self, op: &Operator, prefix: &str) -> opendal::Result<Vec<ObjectInfo>> {
        match self {
            ProviderHashes::Drive(d) => d.list(op, prefix).await,
            ProviderHashes::Graph(g) => g.list(op, prefix).await,
        }
    }

    /// The file `key` with the provider's checksum; `None` when there is none.
    pub async fn stat(&self, op: &Operator, key: &str) -> opendal::Result<Option<ObjectInfo>> {
        match self {
            ProviderHashes::Drive(d) => d.stat(op, key).await,
            ProviderHashes::Graph(g) => g.stat(op, key).await,
        }
    }
}

impl BackendConfig {
    /// The provider's own checksums, for the kinds whose OpenDAL service leaves them out.
    pub fn provider_hashes(&self) -> Option<ProviderHashes> {
        match self {
            BackendConfig::Gdrive(c) => {
                Some(ProviderHashes::Drive(gdrive::DriveHashes::new(&c.root)))
            }
            BackendConfig::Onedrive(c) => {
                Some(ProviderHashes::Graph(onedrive::GraphHashes::new(&c.root)))
            }
            _ => None,
        }
    }
}

/// Where a backend keeps its objects, as far as a profile tells: a space (a disk, a bucket
/// at an endpoint, a host) and a path inside it. Two backends whose places overlap (one path
/// inside the other, in the same space) would see each other's objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub space: String,
    /// Path segments, without empty, `.` or `..` segments (resolved lexically).
    pub path: Vec<String>,
}

impl Place {
    fn new(space: String, path: &str) -> Place {
        let mut segs: Vec<String> = Vec::new();
        for seg in path.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segs.pop();
                }
                s => segs.push(s.to_string()),
            }
        }
        Place { space, path: segs }
    }

    /// True when one place is the other or lies inside it.
    pub fn overlaps(&self, other: &Place) -> bool {
        let n = self.path.len().min(other.path.len());
        self.space == other.space && self.path[..n] == other.path[..n]
    }

    /// For messages.
    pub fn display(&self) -> String {
        format!("{}/{}", self.space, self.path.join("/"))
    }
}

impl BackendConfig {
    /// The S3 connection settings of the `s3` and `glacier` kinds.
    pub fn s3(&self) -> Option<&s3::S3Config> {
        match self {
            BackendConfig::S3(c) => Some(c),
            BackendConfig::Glacier(g) => Some(g.s3()),
            _ => None,
        }
    }

    /// Where this backend keeps its objects (see [`Place`]).
    pub fn place(&self) -> Place {
        match self {
            BackendConfig::Fs(c) => {
                let root = secret::expand_home(&c.root);
                let root = if root.is_absolute() {
                    root
                } else {
                    std::env::current_dir().unwrap_or_default().join(root)
                };
                Place::new("file://".into(), &root.to_string_lossy())
            }
            BackendConfig::S3(_) | BackendConfig::Glacier(_) => {
                let c = self.s3().expect("an S3 kind");
                let endpoint = c
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", c.region));
                Place::new(
                    format!("s3://{}@{}", c.bucket, endpoint.trim_end_matches('/')),
                    &c.prefix,
                )
            }
            BackendConfig::Gdrive(c) => Place::new("gdrive:".into(), &c.root),
            BackendConfig::Onedrive(c) => Place::new("onedrive:".into(), &c.root),
            BackendConfig::Sftp(c) => {
                let host = c.host.trim_end_matches(":22");
                Place::new(format!("sftp://{host}"), &c.root)
            }
            BackendConfig::Webdav(c) => {
                Place::new(c.endpoint.trim_end_matches('/').to_string(), &c.root)
            }
        }
    }
}

/// Builds an operator from string options; the option names were validated by our config
/// structs, since OpenDAL silently ignores keys it does not know.
pub(crate) fn build(
    kind: &'static str,
    scheme: &str,
    options: Vec<(&str, String)>,
) -> Result<Operator, BackendError> {
    opendal::init_default_registry();
    let iter = options.into_iter().map(|(k, v)| (k.to_string(), v));
    Operator::via_iter(scheme, iter).map_err(|source| BackendError::Opendal { kind, source })
}

/// Reads a secret for backend `kind`, turning a failure into a configuration error.
pub(crate) fn reveal(kind: &'static str, s: &Secret) -> Result<String, BackendError> {
    s.reveal()
        .map_err(|source| BackendError::Secret { kind, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<BackendConfig, String> {
        toml::from_str(t).map_err(|e| e.to_string())
    }

    #[test]
    fn kind_selects_the_variant() {
        let c = parse("kind = \"fs\"\nroot = \"/tmp/x\"").unwrap();
        assert_eq!(c.kind(), "fs");
        let c = parse(
            "kind = \"glacier\"\nbucket = \"b\"\nregion = \"us-east-1\"\naccess-key-id = { env = \"A\" }\nsecret-access-key = { env = \"B\" }",
        )
        .unwrap();
        assert!(c.capabilities().needs_thaw);
        assert_eq!(c.capabilities().min_storage_days, 180);
    }

    #[test]
    fn unknown_keys_and_kinds_are_rejected() {
        let e = parse("kind = \"fs\"\nroot = \"/x\"\nrooot = 1").unwrap_err();
        assert!(e.contains("rooot"), "{e}");
        let e = parse("kind = \"ftp\"\nroot = \"/x\"").unwrap_err();
        assert!(e.contains("ftp"), "{e}");
    }

    /// Drive and OneDrive cannot be reached from the test machines: everything up to the
    /// network is checked here (profile parsing, secrets, operator construction, limits).
    #[test]
    fn drive_like_operators_build_without_the_network() {
        std::env::set_var("LOMOB_T_GD_ID", "client-id");
        std::env::set_var("LOMOB_T_GD_SECRET", "client-secret");
        std::env::set_var("LOMOB_T_GD_TOKEN", "refresh-token");
        for kind in ["gdrive", "onedrive"] {
            let c = parse(&format!(
                "kind = \"{kind}\"\nroot = \"/lomob\"\nclient-id = {{ env = \"LOMOB_T_GD_ID\" }}\nclient-secret = {{ env = \"LOMOB_T_GD_SECRET\" }}\nrefresh-token = {{ env = \"LOMOB_T_GD_TOKEN\" }}\none-shot-limit = \"50MB\""
            ))
            .unwrap();
            let caps = c.capabilities();
            assert_eq!(caps.one_shot_limit, Some(ByteSize::mb(50)), "{kind}");
            assert!(!caps.streaming_write, "{kind}");
            let op = c.operator(&TransferConfig::default()).unwrap();
            assert_eq!(op.info().scheme().to_string(), kind);
            assert!(!format!("{c:?}").contains("refresh-token"), "{kind}");
        }
        let c = parse(
            "kind = \"gdrive\"\nroot = \"lomob\"\nclient-id = \"a\"\nclient-secret = \"b\"\nrefresh-token = \"c\"",
        )
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("absolute"));
        let c = parse(
            "kind = \"onedrive\"\nclient-id = \"a\"\nrefresh-token = { env = \"LOMOB_T_UNSET_TOKEN\" }",
        )
        .unwrap();
        let e = c
            .operator(&TransferConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("LOMOB_T_UNSET_TOKEN"), "{e}");
    }

    #[test]
    fn places_overlap_only_when_one_is_inside_the_other() {
        let fs = |root: &str| parse(&format!("kind = \"fs\"\nroot = \"{root}\"")).unwrap();
        assert!(fs("/nas/lomob")
            .place()
            .overlaps(&fs("/nas/lomob/").place()));
        assert!(fs("/nas/lomob")
            .place()
            .overlaps(&fs("/nas/lomob/a").place()));
        assert!(fs("/nas/x/../lomob")
            .place()
            .overlaps(&fs("/nas/lomob").place()));
        assert!(!fs("/nas/lomob")
            .place()
            .overlaps(&fs("/nas/lomob2").place()));
        let s3 = |bucket: &str, prefix: &str| {
            parse(&format!(
                "kind = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\""
            ))
            .unwrap()
        };
        assert!(s3("b", "/").place().overlaps(&s3("b", "/parents").place()));
        assert!(!s3("b", "/a").place().overlaps(&s3("b", "/b").place()));
        assert!(!s3("b", "/").place().overlaps(&s3("c", "/").place()));
    }

    #[tokio::test]
    async fn fs_operator_writes_and_reads() {
        let dir = std::env::temp_dir().join(format!("lomob-be-{}", std::process::id()));
        let c = parse(&format!("kind = \"fs\"\nroot = \"{}\"", dir.display())).unwrap();
        let op = c.operator(&TransferConfig::default()).unwrap();
        op.write("a/b.txt", "hello").await.unwrap();
        assert_eq!(op.read("a/b.txt").await.unwrap().to_vec(), b"hello");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

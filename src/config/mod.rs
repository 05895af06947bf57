//! The configuration: one TOML file (or several, merged in order) with a `[library]` section
//! and one `[sites.NAME]` section per site, plus `LOMOB_`-prefixed environment overrides.
//!
//! Unknown keys and wrong types are errors that name the file and the key; secrets are read
//! from the environment or files only when a backend is built. With no file at all, an
//! embedded default gives one site, `local`, on local disk, so a new user starts with nothing
//! to set up.

mod duration;
mod encryption;
mod schedule;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use lomob_backends::fs::FsConfig;
use lomob_backends::{BackendConfig, ByteSize, Secret, TransferConfig};
use serde::{Deserialize, Serialize};

pub use duration::Period;
pub use encryption::{EncryptionConfig, IdentityConfig};
pub use schedule::Schedule;

/// The whole configuration after merging files, environment and defaults.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub library: LibraryConfig,
    /// Alerts for every site that has no `[sites.NAME.alert]` of its own.
    pub alert: AlertConfig,
    /// How `lomob daemon` watches, waits and retries.
    pub daemon: DaemonConfig,
    pub sites: BTreeMap<String, SiteConfig>,
}

impl Config {
    /// The alert settings that apply to `site`: its own section when it names a channel,
    /// else the global `[alert]`.
    pub fn alert_for(&self, site: Option<&str>) -> &AlertConfig {
        match site.and_then(|s| self.sites.get(s)) {
            Some(s) if s.alert.has_channel() => &s.alert,
            _ => &self.alert,
        }
    }
}

/// `[library]`: what to back up.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LibraryConfig {
    /// Folders to scan when `lomob scan` or `lomob backup` is given none. `~/` is expanded.
    pub roots: Vec<PathBuf>,
    /// File names never recorded. Default: `.DS_Store`, `._.DS_Store`, `Thumbs.db`.
    pub ignore_files: Vec<String>,
    /// Folder names never entered. Default: `.idea`, `.git`, `.github`.
    pub ignore_dirs: Vec<String>,
    /// Threads for walking and hashing. Default: the number of CPU cores.
    pub threads: Option<usize>,
    /// Most files one scan may mark deleted in one root without `--allow-delete`. Default:
    /// 1,000, or half of the root's files when that is fewer.
    pub max_delete: Option<u64>,
    /// What `lomob check --local` may re-read per run: a share of the library per day since
    /// the last local check (`5%`, the default: every byte within about a month), or a
    /// size (`20GB`).
    pub local_budget: Option<String>,
}

pub const DEFAULT_IGNORE_FILES: &[&str] = &[".DS_Store", "._.DS_Store", "Thumbs.db"];
pub const DEFAULT_IGNORE_DIRS: &[&str] = &[".idea", ".git", ".github"];

impl Default for LibraryConfig {
    fn default() -> Self {
        LibraryConfig {
            roots: Vec::new(),
            ignore_files: DEFAULT_IGNORE_FILES.iter().map(|s| s.to_string()).collect(),
            ignore_dirs: DEFAULT_IGNORE_DIRS.iter().map(|s| s.to_string()).collect(),
            threads: None,
            max_delete: None,
            local_budget: None,
        }
    }
}

/// `[sites.NAME]`: where one off-site copy goes and how it is looked after.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SiteConfig {
    /// Daily destination, one object per file.
    pub stage: BackendConfig,
    /// Cold destination for packed images.
    pub archive: BackendConfig,
    /// Pack staged files into images once this much is staged. Default 10GB; must stay
    /// under the stage's free quota when it has one.
    #[serde(default = "default_pack_threshold")]
    pub pack_threshold: ByteSize,
    /// Size of each archive image. Default 5GB.
    #[serde(default = "default_iso_size")]
    pub iso_size: ByteSize,
    /// Days a staged copy is kept after its content stopped existing locally (the file was
    /// deleted, or the copy is an older version replaced since); it is then removed from the
    /// stage and never archived. Unset (the default): kept, and archived like any other, so
    /// nothing that was ever staged is lost. Applies to the stage only: nothing archived is
    /// ever deleted.
    #[serde(default)]
    pub stage_retention_days: Option<u32>,
    /// Bytes `lomob check --deep` downloads from the stage per run; the next run goes on
    /// where it stopped, so every staged object is read once per cycle. Default 1GB.
    #[serde(default = "default_deep_budget")]
    pub deep_budget: ByteSize,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub alert: AlertConfig,
    #[serde(default)]
    pub transfer: TransferConfig,
    /// Client-side encryption (age); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
}

fn default_pack_threshold() -> ByteSize {
    ByteSize::gb(10)
}

fn default_deep_budget() -> ByteSize {
    ByteSize::gb(1)
}

fn default_iso_size() -> ByteSize {
    ByteSize::gb(5)
}

/// `[sites.NAME.schedule]`, used by the daemon.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Scan and sync. Default `daily 02:00`.
    pub sync: Schedule,
    /// Consistency check of the stage. Default `daily 05:00`.
    pub check_stage: Schedule,
    /// Consistency check of the archive (LIST and HEAD only, no retrieval). Default
    /// `monthly 1 04:00`.
    pub check_archive: Schedule,
    /// Re-reading a share of the library for silent corruption (`lomob check --local`,
    /// within `[library] local-budget`). Default `daily 03:00`.
    pub check_local: Schedule,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            sync: Schedule::Daily { hour: 2, minute: 0 },
            check_stage: Schedule::Daily { hour: 5, minute: 0 },
            check_archive: Schedule::Monthly {
                day: 1,
                hour: 4,
                minute: 0,
            },
            check_local: Schedule::Daily { hour: 3, minute: 0 },
        }
    }
}

/// `[daemon]`: how `lomob daemon` watches the library, runs the schedules and stops.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct DaemonConfig {
    /// Quiet time after the last change to a file before it is read (a file still being
    /// copied is not read half-written). Default 30s.
    pub settle: Period,
    /// For sites with `sync = "on-change"`: time after a change is recorded before the site
    /// is synced, so a batch of new photos goes in one run. Default 60s.
    pub stage_delay: Period,
    /// How often a root the watcher cannot cover (too many folders, a network file system,
    /// lost events) is rescanned instead. Default 1h.
    pub scan_interval: Period,
    /// How often a full scan checks that the watcher missed nothing. Default 7d.
    pub reconcile_every: Period,
    /// Sites whose runs may go on at once. Default 3.
    pub sites_at_once: usize,
    /// Spread of start times, so sites due at the same time do not start together; each
    /// site and job gets a fixed offset within it. Default 5m.
    pub jitter: Period,
    /// A failed run is retried with growing pauses (the first this long) ... Default 30s.
    pub retry_first: Period,
    /// ... for this long after it first failed; then an alert is sent. Default 30m.
    pub retry_for: Period,
    /// Longest wait for the run in flight after SIGTERM or Ctrl-C before the daemon
    /// checkpoints it and exits. Default 30s.
    pub stop_timeout: Period,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            settle: Period::secs(30),
            stage_delay: Period::secs(60),
            scan_interval: Period::secs(3600),
            reconcile_every: Period::secs(7 * 86_400),
            sites_at_once: 3,
            jitter: Period::secs(300),
            retry_first: Period::secs(30),
            retry_for: Period::secs(1800),
            stop_timeout: Period::secs(30),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpSecurity {
    /// Plain SMTP (a local relay only).
    None,
    /// STARTTLS on the submission port (587). The default.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[alert]` or `[sites.NAME.alert]`: who is told when a check finds a difference, a run
/// fails, or a site has not been synced for too long.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AlertConfig {
    /// Addresses to email. Empty: alerts only go to the log.
    pub email: Vec<String>,
    /// Sender address. Default `lomob@<hostname>`.
    pub from: Option<String>,
    pub smtp_host: Option<String>,
    /// Default: 587 for starttls, 465 for tls, 25 for none.
    pub smtp_port: Option<u16>,
    pub smtp_security: SmtpSecurity,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<Secret>,
    /// A PEM file of a CA certificate to trust for the SMTP server (a home relay with a
    /// certificate of its own), beside the usual web roots.
    pub smtp_ca: Option<PathBuf>,
    /// A URL that gets each alert as a JSON POST. A secret (it often holds a token).
    pub webhook: Option<Secret>,
    /// A healthchecks.io-style URL: `URL/start` when a run starts, `URL` when it succeeds,
    /// `URL/fail` when it fails, with the run's summary. A secret.
    pub heartbeat: Option<Secret>,
    /// Alert when a site has had no successful sync for this many days. Default 3.
    pub stale_after_days: Option<u32>,
    /// Send an identical alert again at most once per this many days. Default 7.
    pub repeat_after_days: Option<u32>,
}

impl AlertConfig {
    pub fn has_channel(&self) -> bool {
        !self.email.is_empty() || self.webhook.is_some() || self.heartbeat.is_some()
    }

    pub fn stale_after(&self) -> i64 {
        i64::from(self.stale_after_days.unwrap_or(3)) * 86_400
    }

    pub fn repeat_after(&self) -> i64 {
        i64::from(self.repeat_after_days.unwrap_or(7)) * 86_400
    }
}

/// A configuration problem, with the file and key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist: check the path given with --config or LOMOB_CONFIG")]
    Missing(PathBuf),
    #[error("invalid configuration:\n{0}\nfix it and run again (`lomob site list` checks a config; profiles/ has examples)")]
    Invalid(String),
    #[error("site {site:?}: {message}")]
    Site { site: String, message: String },
}

/// The configuration and where it came from.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: Config,
    /// The files merged, in order; empty when the embedded default is used.
    pub sources: Vec<PathBuf>,
    pub data_dir: PathBuf,
}

/// The folder for lomob's own data: the manifest and the default local site
/// (`~/.local/share/lomob` on Linux, `%LOCALAPPDATA%\\lomob` on Windows: this machine's own,
/// never roamed to another).
pub fn data_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(|| PathBuf::from(".local/share"))
        .join("lomob")
}

/// The config file used when none is given, if it exists.
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("lomob").join("config.toml"))
}

/// The embedded default: a `local` site with stage and archive under the data folder.
pub fn embedded_default(data_dir: &Path) -> Config {
    let fs = |sub: &str| {
        BackendConfig::Fs(FsConfig {
            root: data_dir.join("local").join(sub),
            verify_read_back: false,
        })
    };
    let mut sites = BTreeMap::new();
    sites.insert(
        "local".to_string(),
        SiteConfig {
            stage: fs("stage"),
            archive: fs("archive"),
            pack_threshold: default_pack_threshold(),
            iso_size: default_iso_size(),
            deep_budget: default_deep_budget(),
            stage_retention_days: None,
            schedule: ScheduleConfig::default(),
            alert: AlertConfig::default(),
            transfer: TransferConfig::default(),
            encryption: None,
        },
    );
    Config {
        library: LibraryConfig::default(),
        alert: AlertConfig::default(),
        daemon: DaemonConfig::default(),
        sites,
    }
}

/// Environment variables that configure the CLI itself rather than the profile.
const CLI_ENV: &[&str] = &["db", "config", "log_level", "log"];

/// Loads the configuration from `files` (merged in order), or the default config file, or
/// the embedded default; then applies `LOMOB_` environment overrides and validates.
///
/// Environment keys: `LOMOB_LIBRARY__THREADS=4`, `LOMOB_SITES__PARENTS__PACK_THRESHOLD=20GB`
/// (`__` separates levels, `_` stands for `-`).
pub fn load(files: &[PathBuf]) -> Result<LoadedConfig, ConfigError> {
    let data_dir = data_dir();
    let mut sources = Vec::new();
    if files.is_empty() {
        if let Some(p) = default_config_path().filter(|p| p.exists()) {
            sources.push(p);
        }
    } else {
        for f in files {
            if !f.exists() {
                return Err(ConfigError::Missing(f.clone()));
            }
            sources.push(f.clone());
        }
    }
    let mut fig = if sources.is_empty() {
        Figment::from(Serialized::defaults(embedded_default(&data_dir)))
    } else {
        Figment::new()
    };
    for s in &sources {
        check_utf8(s)?;
        fig = fig.merge(Toml::file_exact(s));
    }
    // Only `LOMOB_LIBRARY__*` and `LOMOB_SITES__*` configure the profile; other LOMOB_
    // variables (the CLI's own, test harness settings) are not configuration keys.
    let env = Env::prefixed("LOMOB_")
        .filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            !CLI_ENV.contains(&k.as_str())
                && (k.starts_with("library__") || k.starts_with("sites__"))
        })
        .map(|k| {
            k.as_str()
                .to_ascii_lowercase()
                .replace("__", ".")
                .replace('_', "-")
                .into()
        });
    fig = fig.merge(env);
    let config: Config = fig
        .extract()
        .map_err(|e| ConfigError::Invalid(describe(e, &fig)))?;
    validate(&config)?;
    warn_if_readable(&sources, &config);
    Ok(LoadedConfig {
        config,
        sources,
        data_dir,
    })
}

/// Warns when a profile that holds a secret written inline (shown as `***`) can be read by
/// other users of the machine.
fn warn_if_readable(sources: &[PathBuf], config: &Config) {
    let inline = serde_json::to_string(config).is_ok_and(|j| j.contains("\"***\""));
    if !inline {
        return;
    }
    for p in sources {
        if let Some(mode) = crate::platform::file::readable_by_others(p) {
            tracing::warn!(
                "{} holds a secret written inline and can be read by other users of this machine (mode {mode:o}): run `chmod 600 {}`, or read the secret from a file or an environment variable",
                p.display(),
                p.display()
            );
        }
    }
}

/// Parses and validates a profile's bytes as [`load`] reads a file (without environment
/// overrides): for the fuzz target (`fuzz/fuzz_targets/profile.rs`) and tests.
pub fn parse_bytes(bytes: &[u8]) -> Result<Config, ConfigError> {
    parse_str(utf8_text(bytes, "<profile>")?)
}

/// Parses configuration text (for tests and `lomob site list --config`-less checks).
pub fn parse_str(toml: &str) -> Result<Config, ConfigError> {
    let fig = Figment::from(Toml::string(toml));
    let config: Config = fig
        .extract()
        .map_err(|e| ConfigError::Invalid(describe(e, &fig)))?;
    validate(&config)?;
    Ok(config)
}

/// Refuses a profile that is not UTF-8 text, naming the line and column of the first bad
/// byte (the TOML parser only says "stream did not contain valid UTF-8").
fn check_utf8(path: &Path) -> Result<(), ConfigError> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(()); // unreadable: figment reports it with the path
    };
    utf8_text(&bytes, &path.display().to_string()).map(|_| ())
}

/// `bytes` as text, or the error naming `name` and the first byte that is not UTF-8.
fn utf8_text<'a>(bytes: &'a [u8], name: &str) -> Result<&'a str, ConfigError> {
    std::str::from_utf8(bytes).map_err(|e| {
        ConfigError::Invalid(format!(
            "  {name}: {}",
            utf8_problem(bytes, e.valid_up_to())
        ))
    })
}

/// Where the first byte that is not UTF-8 is, and what to do.
fn utf8_problem(bytes: &[u8], at: usize) -> String {
    let before = &bytes[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    format!(
        "line {line}, column {column}: byte 0x{:02x} is not UTF-8 text: save the profile as UTF-8 (a name with accents written in Latin-1 or Windows-1252 does this)",
        bytes[at]
    )
}

/// The key inside a backend section (`sites.NAME.stage`) an error is about. A backend
/// section is chosen by its `kind`, and serde reads such a section whole before the
/// variant's fields, so the error's path stops at the section: the key is found again by
/// the value the error quotes.
fn locate_in_section(
    fig: &Figment,
    path: &[String],
    kind: &figment::error::Kind,
) -> Option<String> {
    use figment::error::{Actual, Kind};
    let found = match kind {
        Kind::UnknownVariant(v, _) => v.clone(),
        Kind::InvalidType(Actual::Str(v), _) | Kind::InvalidValue(Actual::Str(v), _) => v.clone(),
        _ => return None,
    };
    let dict = fig.find_value(&path.join(".")).ok()?.into_dict()?;
    let mut keys = dict
        .iter()
        .filter(|(k, v)| k.as_str() != "kind" && v.as_str() == Some(found.as_str()));
    match (keys.next(), keys.next()) {
        (Some((k, _)), None) => Some(k.clone()),
        _ => None,
    }
}

/// The error with Rust's type names (`u16`, `usize`) said the way a profile is written.
fn plain_kind(kind: figment::error::Kind) -> figment::error::Kind {
    use figment::error::Kind;
    let plain = |expected: String| {
        match expected.as_str() {
            "u8" => "a whole number from 0 to 255",
            "u16" => "a whole number from 0 to 65535",
            "u32" | "u64" | "usize" => "a whole number, 0 or more",
            "bool" => "true or false",
            "a string" => "text in quotes",
            _ => return expected,
        }
        .to_string()
    };
    match kind {
        Kind::InvalidType(a, e) => Kind::InvalidType(a, plain(e)),
        Kind::InvalidValue(a, e) => Kind::InvalidValue(a, plain(e)),
        other => other,
    }
}

/// One line per problem: where (file), which key, and what was wrong.
fn describe(e: figment::Error, fig: &Figment) -> String {
    let mut out = Vec::new();
    for e in e {
        let mut path = e.path.clone();
        if let Some(k) = locate_in_section(fig, &path, &e.kind) {
            path.push(k);
        }
        let key = path.join(".");
        let place = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            Some(figment::Source::File(p)) => format!("{}: ", p.display()),
            Some(other) => format!("{other}: "),
            None => match &e.metadata {
                Some(m) if m.name.contains("environment") => "environment (LOMOB_*): ".into(),
                _ => String::new(),
            },
        };
        let key = if key.is_empty() {
            String::new()
        } else {
            format!("key `{key}`: ")
        };
        out.push(format!("  {place}{key}{}", plain_kind(e.kind)));
    }
    out.join("\n")
}

fn check_alert(a: &AlertConfig) -> Result<(), String> {
    if !a.email.is_empty() && a.smtp_host.is_none() {
        return Err("email is set but smtp-host is missing".into());
    }
    for addr in a.email.iter().chain(&a.from) {
        if !addr.contains('@') {
            return Err(format!("{addr:?} is not an email address"));
        }
    }
    if let Some(ca) = &a.smtp_ca {
        if !ca.is_file() {
            return Err(format!("smtp-ca {} is not a file", ca.display()));
        }
    }
    Ok(())
}

/// Largest image ISO 9660 can describe: its volume size is a 32-bit count of 2048-byte
/// sectors.
const MAX_ISO_SIZE: u64 = (u32::MAX as u64) * 2048;

/// A zero where at least 1 is needed: said, rather than quietly turned into 1 (or, for a
/// timeout, into a one-second limit every large upload would hit).
fn not_zero(key: &str, value: u64, hint: &str) -> Result<(), String> {
    if value == 0 {
        return Err(format!("{key} = 0 is not allowed: {hint}"));
    }
    Ok(())
}

fn check_library(l: &LibraryConfig) -> Result<(), String> {
    for r in &l.roots {
        if !(r.is_absolute() || r.starts_with("~")) {
            return Err(format!(
                "roots: {:?} is a relative path, which would be read from whatever folder lomob is started in (the daemon's is /): write the full path, such as \"/home/me/{}\" or \"~/{}\"",
                r.display().to_string(),
                r.display(),
                r.display()
            ));
        }
    }
    if let Some(t) = l.threads {
        not_zero(
            "threads",
            t as u64,
            "give the number of threads, or remove the key to use one per CPU core",
        )?;
    }
    Ok(())
}

fn check_transfer(t: &TransferConfig) -> Result<(), String> {
    not_zero(
        "concurrency",
        t.concurrency as u64,
        "give the number of requests in flight at once (at least 1), or remove the key for the default 8",
    )?;
    not_zero(
        "timeout-secs",
        t.timeout_secs,
        "give the seconds one request may take (large parts need minutes on a home uplink), or remove the key for the default 600",
    )?;
    if let Some(b) = t.bandwidth_limit {
        not_zero(
            "bandwidth-limit",
            b.bytes(),
            "give a rate per second such as \"2MB\", or remove the key for no limit",
        )?;
    }
    Ok(())
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    check_alert(&c.alert).map_err(|e| ConfigError::Invalid(format!("  [alert] {e}")))?;
    check_library(&c.library).map_err(|e| ConfigError::Invalid(format!("  [library] {e}")))?;
    not_zero(
        "sites-at-once",
        c.daemon.sites_at_once as u64,
        "give how many sites may sync at once (at least 1), or remove the key for the default 3",
    )
    .map_err(|e| ConfigError::Invalid(format!("  [daemon] {e}")))?;
    if let Some(b) = &c.library.local_budget {
        crate::check::local::Budget::parse(b)
            .map_err(|e| ConfigError::Invalid(format!("  [library] local-budget = {b:?}: {e}")))?;
    }
    for (name, site) in &c.sites {
        let bad = |message: String| ConfigError::Site {
            site: name.clone(),
            message,
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return Err(bad(
                "site names may hold only letters, digits, '-' and '_'".into()
            ));
        }
        site.stage
            .validate()
            .map_err(|e| bad(format!("[stage] {e}")))?;
        site.archive
            .validate()
            .map_err(|e| bad(format!("[archive] {e}")))?;
        if site.iso_size.bytes() < 1_000_000 {
            return Err(bad(format!(
                "iso-size {} is too small: use at least 1MB (5GB is the default)",
                site.iso_size
            )));
        }
        if site.iso_size.bytes() > MAX_ISO_SIZE {
            return Err(bad(format!(
                "iso-size {} is larger than an ISO 9660 image can be (8 TiB): images are read back and thawed whole, so keep them to a few GB (5GB is the default)",
                site.iso_size
            )));
        }
        if let (BackendConfig::Gdrive(_) | BackendConfig::Onedrive(_), Some(limit)) =
            (&site.archive, site.archive.capabilities().one_shot_limit)
        {
            if site.iso_size > limit {
                return Err(bad(format!(
                    "iso-size {} is above the archive's one-shot-limit {limit}: Drive and OneDrive take an image in one request, held in memory while it is sent; set iso-size to at most {limit}, or raise one-shot-limit in the archive's section if this machine has the memory",
                    site.iso_size
                )));
            }
        }
        check_transfer(&site.transfer).map_err(|e| bad(format!("[transfer] {e}")))?;
        if let Some(q) = site.stage.capabilities().free_quota {
            if site.pack_threshold > q {
                return Err(bad(format!(
                    "pack-threshold {} is above the stage's free quota {q}: lower pack-threshold, or raise the stage's free-quota if you pay for more",
                    site.pack_threshold
                )));
            }
        }
        check_alert(&site.alert).map_err(|e| bad(format!("[alert] {e}")))?;
        if let Some(enc) = &site.encryption {
            enc.parsed_recipients().map_err(bad)?;
        }
        let sch = &site.schedule;
        for (key, s) in [
            ("check-stage", sch.check_stage),
            ("check-archive", sch.check_archive),
            ("check-local", sch.check_local),
        ] {
            if s == Schedule::OnChange {
                return Err(bad(format!(
                    "[schedule] {key} = \"on-change\": only sync can follow changes; give a time such as \"daily 05:00\""
                )));
            }
        }
        if let Some(days) = site.stage_retention_days {
            if days < MIN_STAGE_RETENTION_DAYS {
                return Err(bad(format!(
                    "stage-retention-days = {days} is too short: a file missing for a few days (an unmounted disk, a folder moved and back) would lose its only off-site copy; use at least {MIN_STAGE_RETENTION_DAYS}, or remove the key to keep staged copies until they are archived"
                )));
            }
        }
    }
    check_no_shared_locations(c)
}

/// The shortest `stage-retention-days` accepted.
pub const MIN_STAGE_RETENTION_DAYS: u32 = 7;

/// Two sites never share a location: one site would free or expire a staged copy the
/// other still needs, or clean up the other's uploads. (A site's own stage and archive may
/// share one: their objects live in different folders of the key space.)
fn check_no_shared_locations(c: &Config) -> Result<(), ConfigError> {
    let places: Vec<(&str, &str, lomob_backends::Place)> = c
        .sites
        .iter()
        .flat_map(|(name, s)| {
            [
                (name.as_str(), "stage", s.stage.place()),
                (name.as_str(), "archive", s.archive.place()),
            ]
        })
        .collect();
    for (i, (a, a_role, a_place)) in places.iter().enumerate() {
        for (b, b_role, b_place) in &places[i + 1..] {
            if a != b && a_place.overlaps(b_place) {
                return Err(ConfigError::Site {
                    site: a.to_string(),
                    message: format!(
                        "its {a_role} ({}) overlaps the {b_role} of site {b:?} ({}): two sites must never share a location (one would free or clean up what the other still needs); give each site its own folder, bucket or prefix",
                        a_place.display(),
                        b_place.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_has_a_local_site() {
        let c = embedded_default(Path::new("/data"));
        let s = &c.sites["local"];
        assert_eq!(s.stage.kind(), "fs");
        assert_eq!(s.iso_size, ByteSize::gb(5));
        assert_eq!(c.library.ignore_files.len(), 3);
    }

    #[test]
    fn unknown_keys_name_the_key() {
        let e = parse_str("[library]\nrootz = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rootz"), "{e}");
        assert!(e.contains("library"), "{e}");
    }

    #[test]
    fn wrong_types_say_what_is_expected() {
        let e = parse_str("[library]\nthreads = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("library.threads"), "{e}");
        assert!(e.contains("expected"), "{e}");
    }

    #[test]
    fn two_sites_sharing_a_stage_are_refused() {
        let e = parse_str(
            r#"
[sites.a]
stage = { kind = "fs", root = "/nas/lomob" }
archive = { kind = "fs", root = "/nas/a-archive" }
[sites.b]
stage = { kind = "fs", root = "/nas/lomob/b" }
archive = { kind = "fs", root = "/nas/b-archive" }
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"b\"") && e.contains("overlaps"), "{e}");
        // One site's own stage and archive may share a bucket.
        parse_str(
            r#"
[sites.a]
stage = { kind = "s3", bucket = "family" }
archive = { kind = "glacier", bucket = "family" }
"#,
        )
        .unwrap();
    }

    #[test]
    fn a_short_stage_retention_is_refused() {
        let e = parse_str(
            r#"
[sites.a]
stage-retention-days = 3
stage = { kind = "fs", root = "/s" }
archive = { kind = "fs", root = "/a" }
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at least 7"), "{e}");
    }

    #[test]
    fn a_threshold_above_the_free_quota_is_refused() {
        let e = parse_str(
            r#"
[sites.b2]
pack-threshold = "20GB"
stage = { kind = "s3", bucket = "b", free-quota = "10GB" }
archive = { kind = "fs", root = "/tmp/a" }
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("b2"), "{e}");
        assert!(e.contains("free quota"), "{e}");
    }

    const SITE: &str = "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n";

    /// Reliability suite (#15): these zeros were quietly changed (a timeout of 0 became a
    /// one-second limit, a bandwidth limit of 0 one byte per second, the rest 1).
    #[test]
    fn zeros_that_would_be_quietly_changed_are_refused() {
        for (extra, key) in [
            ("[sites.a.transfer]\nconcurrency = 0\n", "concurrency = 0"),
            ("[sites.a.transfer]\ntimeout-secs = 0\n", "timeout-secs = 0"),
            (
                "[sites.a.transfer]\nbandwidth-limit = 0\n",
                "bandwidth-limit = 0",
            ),
            ("[library]\nthreads = 0\n", "threads = 0"),
            ("[daemon]\nsites-at-once = 0\n", "sites-at-once = 0"),
        ] {
            let e = parse_str(&format!("{SITE}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("remove the key"), "{e}");
        }
        parse_str(&format!(
            "{SITE}[sites.a.transfer]\nconcurrency = 1\ntimeout-secs = 5\nbandwidth-limit = \"1MB\"\n"
        ))
        .unwrap();
    }

    /// Reliability suite (#15): a relative root was accepted and read from the folder lomob
    /// happened to start in.
    #[test]
    fn relative_library_roots_are_refused() {
        let e = parse_str("[library]\nroots = [\"Pictures\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"Pictures\" is a relative path") && e.contains("~/Pictures"),
            "{e}"
        );
        parse_str("[library]\nroots = [\"~/Pictures\", \"/srv/photos\"]\n").unwrap();
    }

    /// Reliability suite (#15): `iso-size = "50TB"` was accepted, though no ISO 9660 image
    /// can be larger than 8 TiB.
    #[test]
    fn an_iso_size_beyond_iso_9660_is_refused() {
        let e = parse_str(&SITE.replace("[sites.a]\n", "[sites.a]\niso-size = \"50TB\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("8 TiB"), "{e}");
        parse_str(&SITE.replace("[sites.a]\n", "[sites.a]\niso-size = \"8TB\"\n")).unwrap();
    }

    /// Reliability suite (#15): a bad value inside a backend section named only the section
    /// (`sites.a.archive`), not the key.
    #[test]
    fn a_bad_value_in_a_backend_section_names_its_key() {
        let e = parse_str(
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"glacier\", bucket = \"b\", thaw-tier = \"fast\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("key `sites.a.archive.thaw-tier`"), "{e}");
    }

    /// Reliability suite (#15): a profile saved in Latin-1 gave "stream did not contain
    /// valid UTF-8", with no line and no hint.
    /// Reliability suite (#15): `smtp-port = 99999` said "expected u16".
    #[test]
    fn types_are_named_as_a_profile_writes_them() {
        let e = parse_str("[alert]\nsmtp-port = 99999\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a whole number from 0 to 65535"), "{e}");
        let e = parse_str("[library]\nthreads = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a whole number, 0 or more"), "{e}");
    }

    #[test]
    fn a_byte_that_is_not_utf8_is_located() {
        let text = b"[library]\nroots = [\"/photos/caf\xe9\"]\n";
        let e = utf8_problem(text, 31);
        assert!(e.starts_with("line 2, column 22: byte 0xe9"), "{e}");
        assert!(e.contains("save the profile as UTF-8"), "{e}");
    }

    #[test]
    fn parse_bytes_reads_a_profile_and_refuses_what_is_not_text() {
        let c = parse_bytes(SITE.as_bytes()).unwrap();
        assert!(c.sites.contains_key("a"));
        let e = parse_bytes(b"[library]\n\xff").unwrap_err().to_string();
        assert!(e.contains("<profile>: line 2, column 1: byte 0xff"), "{e}");
    }

    /// Case count, as for the ISO reader's: more through `ISO_FUZZ_CASES`.
    fn fuzz_cases() -> u32 {
        std::env::var("ISO_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: fuzz_cases(), ..Default::default() })]

        /// The stable substitute of fuzz/fuzz_targets/profile.rs: a real profile with bytes
        /// changed or cut is refused or accepted, never a panic.
        #[test]
        fn mutated_profiles_never_panic(
            muts in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..8),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut bytes = include_bytes!("../../profiles/parents.toml").to_vec();
            for (i, b) in muts {
                let at = i.index(bytes.len());
                bytes[at] = b;
            }
            let end = cut.index(bytes.len() + 1);
            if let Err(e) = parse_bytes(&bytes[..end]) {
                let _ = e.to_string();
            }
        }
    }
}

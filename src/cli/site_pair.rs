//! `lomob site pair NAME CODE`: turn a relative's receiver (`lomob serve`) into a site.
//!
//! The code gives the receiver's address and the first bytes of its certificate's SHA-256;
//! the request that redeems it goes only to a certificate with those bytes. The answer
//! (keys, bucket, the whole fingerprint) becomes a site section appended to the profile:
//! stage and archive on the receiver, the certificate pinned, the secret key in a file
//! beside the profile (mode 0600), and the objects encrypted with age, because the
//! relative should hold only ciphertext.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use lomob_backends::tls::{parse_fingerprint, prefix_pinned_config};

use super::args::SitePairArgs;
use super::Context;
use crate::exit::UsageError;
use crate::serve::code::PairCode;
use crate::serve::server::{PairAnswer, PairRefusal, PairRequest, PAIR_PATH};

pub fn run(ctx: &Context, a: SitePairArgs) -> anyhow::Result<u8> {
    let name = a.name.trim();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(UsageError(format!(
            "site name {name:?}: use letters, digits, '-' and '_'"
        ))
        .into());
    }
    if ctx.config.config.sites.contains_key(name) {
        return Err(UsageError(format!(
            "a site named {name:?} exists already: choose another name (or remove it from the profile first)"
        ))
        .into());
    }
    let code = PairCode::decode(&a.code).map_err(UsageError)?;
    let profile = a
        .profile
        .clone()
        .or_else(|| ctx.config.sources.first().cloned())
        .or_else(crate::config::default_config_path)
        .ok_or_else(|| UsageError("no profile to write to: give --profile PATH".into()))?;
    let encryption = if a.no_encryption {
        None
    } else {
        Some(encryption_section(
            ctx,
            name,
            &profile,
            a.identity.as_deref(),
        )?)
    };

    let answer = redeem(&code)?;
    let fp = parse_fingerprint(&answer.fingerprint).map_err(anyhow::Error::msg)?;
    if !fp.starts_with(&code.pin_prefix) {
        anyhow::bail!(
            "the receiver answered with certificate {} which is not the one the code names: nothing was written",
            answer.fingerprint
        );
    }

    let dir = profile
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret_file = dir.join(format!("{name}.peer-secret"));
    write_secret(&secret_file, &answer.secret_access_key)?;

    let section = site_section(name, &code, &answer, &secret_file, encryption.as_deref());
    let before = std::fs::read(&profile).ok();
    let mut text = match &before {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => new_profile_head(&ctx.config.data_dir),
    };
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&section);
    write_profile(&profile, &text)?;
    // The profile must still load: if it does not, put it back as it was.
    let loaded = match crate::config::load(std::slice::from_ref(&profile)) {
        Ok(l) => l,
        Err(e) => {
            match &before {
                Some(b) => std::fs::write(&profile, b)?,
                None => std::fs::remove_file(&profile)?,
            }
            anyhow::bail!(
                "the paired site would not load ({e}); {} is as it was. The sender {:?} is paired on the receiver: pair again with a new code once the profile is fixed",
                profile.display(),
                answer.name
            );
        }
    };
    let quota = answer
        .quota
        .map(|q| format!(", quota {}", lomob_backends::ByteSize(q)))
        .unwrap_or_default();
    super::output::stdout_str(&format!(
        "paired: site {name:?} stores on {} (bucket {}{quota}), certificate {} pinned\n\
         wrote the site to {}, the secret key to {}{}\n",
        code.endpoint(),
        answer.bucket,
        answer.fingerprint,
        profile.display(),
        secret_file.display(),
        if encryption.is_some() {
            "; objects are encrypted with age before they leave this machine"
        } else {
            "; objects are NOT encrypted (--no-encryption): the receiver's owner can read them"
        }
    ))?;
    if a.no_test {
        return Ok(0);
    }
    let ctx = Context {
        db: ctx.db.clone(),
        json: ctx.json,
        progress: ctx.progress,
        config: loaded,
        shared: None,
        held_alerts: ctx.held_alerts,
    };
    super::site_test::run(&ctx, name)
}

/// Sends the code's token to the receiver, over TLS that accepts only the certificate the
/// code names.
fn redeem(code: &PairCode) -> anyhow::Result<PairAnswer> {
    let tls = prefix_pinned_config(&code.pin_prefix).map_err(anyhow::Error::msg)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("{}{PAIR_PATH}", code.endpoint());
    let body = PairRequest {
        token: hex::encode(code.token),
    };
    let rt = super::sync_cmd::runtime()?;
    let (status, bytes) = rt
        .block_on(async {
            let r = client.post(&url).json(&body).send().await?;
            let status = r.status();
            Ok::<_, reqwest::Error>((status, r.bytes().await?))
        })
        .map_err(|e| {
            let text = lomob_backends::error::chain(&e);
            if text.contains(lomob_backends::tls::PIN_MISMATCH) {
                anyhow::anyhow!("pairing refused: {text}")
            } else {
                anyhow::anyhow!(
                    "cannot reach the receiver at {}: {text}. Is `lomob serve` running there, and does the address in the code reach it from here (port forwarded, same network)?",
                    code.endpoint()
                )
            }
        })?;
    if !status.is_success() {
        let why = serde_json::from_slice::<PairRefusal>(&bytes)
            .map(|r| r.error)
            .unwrap_or_else(|_| format!("HTTP {status}"));
        return Err(UsageError(format!("the receiver refused the code: {why}")).into());
    }
    serde_json::from_slice(&bytes).context("the receiver's answer is not a pairing answer")
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let (dir, name) = split_path(path)?;
    crate::platform::file::write_atomic(dir, &name, format!("{secret}\n").as_bytes(), true)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The folder and file name of `path` (`.` for a bare name).
fn split_path(path: &Path) -> anyhow::Result<(&Path, String)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} is not a file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    Ok((dir, name))
}

/// Writes the profile through a temporary name, readable by its owner only: it now names
/// the receiver's keys.
fn write_profile(path: &Path, text: &str) -> anyhow::Result<()> {
    let (dir, name) = split_path(path)?;
    crate::platform::file::write_atomic(dir, &name, text.as_bytes(), true)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn site_section(
    name: &str,
    code: &PairCode,
    a: &PairAnswer,
    secret_file: &Path,
    encryption: Option<&str>,
) -> String {
    let location = |role: &str, extra: &str| {
        format!(
            "[sites.{name}.{role}]\n\
             kind = \"s3\"\n\
             endpoint = {}\n\
             bucket = {}\n\
             access-key-id = {}\n\
             secret-access-key = {{ file = {} }}\n\
             tls-fingerprint = {}\n{extra}",
            toml_str(&code.endpoint()),
            toml_str(&a.bucket),
            toml_str(&a.access_key_id),
            toml_str(&secret_file.display().to_string()),
            toml_str(&a.fingerprint),
        )
    };
    format!(
        "# Paired as sender {:?} with the receiver at {} by `lomob site pair` on {}.\n\
         [sites.{name}]\n\n{}\n{}{}",
        a.name,
        code.endpoint(),
        crate::manifest::rfc3339(crate::manifest::now()),
        location("stage", ""),
        location(
            "archive",
            "# Images go up in parts, so a home uplink that drops resumes where it stopped.\nsingle-put-max = \"0\"\n"
        ),
        encryption.map(|e| format!("\n{e}")).unwrap_or_default(),
    )
}

/// The `[sites.NAME.encryption]` section: another encrypted site's keys, the identity file
/// given, or a new identity beside the profile.
fn encryption_section(
    ctx: &Context,
    name: &str,
    profile: &Path,
    identity: Option<&Path>,
) -> anyhow::Result<String> {
    let section = |recipients: &[String], identity: &Path| {
        format!(
            "[sites.{name}.encryption]\nrecipients = [{}]\nidentity = {{ file = {} }}\n",
            recipients
                .iter()
                .map(|r| toml_str(r))
                .collect::<Vec<_>>()
                .join(", "),
            toml_str(&identity.display().to_string())
        )
    };
    if identity.is_none() {
        let existing = ctx
            .config
            .config
            .sites
            .values()
            .filter_map(|s| s.encryption.as_ref())
            .find_map(|e| {
                e.identity
                    .as_ref()
                    .map(|i| (e.recipients.clone(), i.file.clone()))
            });
        if let Some((recipients, file)) = existing {
            return Ok(section(&recipients, &file));
        }
    }
    let path = match identity {
        Some(p) => p.to_path_buf(),
        None => profile
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("lomob-identity.txt"),
    };
    if path.exists() {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let ids = crate::crypt::parse_identity_file(&bytes, &mut || {
            crate::crypt::site::prompt_passphrase("Passphrase of the identity file: ")
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let recipients: Vec<String> = ids.iter().map(|i| i.to_recipient().to_string()).collect();
        return Ok(section(&recipients, &path));
    }
    let recipient =
        super::key_cmd::write_new_identity(&path, &format!(" by `lomob site pair {name}`"), None)?;
    super::output::stderr_str(&format!(
        "made a new age key for site {name:?}: {}\n\
         KEEP THIS KEY SAFE. The receiver holds only ciphertext; without this file (or a copy) \
         the backups on it cannot be read. Print a paper copy now: lomob key export --paper --identity {}\n",
        path.display(),
        path.display()
    ))?;
    Ok(section(&[recipient], &path))
}

/// A new profile keeps the embedded default's local site, which would otherwise vanish
/// the moment a profile exists.
fn new_profile_head(data_dir: &Path) -> String {
    let root = |sub: &str| toml_str(&data_dir.join("local").join(sub).display().to_string());
    format!(
        "# lomob profile, started by `lomob site pair`. The local site is the embedded default's.\n\n\
         [sites.local]\n\
         stage = {{ kind = \"fs\", root = {} }}\n\
         archive = {{ kind = \"fs\", root = {} }}\n",
        root("stage"),
        root("archive")
    )
}

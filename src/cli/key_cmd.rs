//! `lomob key generate | export --paper | verify`: the keys of encrypted sites.
//!
//! An encrypted site is only as safe as its keys: a lost identity means lost data, with no
//! way around it. So making a key says so loudly, the paper copy carries everything needed
//! to decrypt with the stock `age` tool and nothing of lomob, and `verify` proves that a
//! key (above all the recovery key) opens real objects of the site, after which `status`
//! stops asking for it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::args::KeyCommand;
use super::Context;
use crate::crypt::site::{load_identities, prompt_passphrase, warn_if_shared};
use crate::crypt::{
    decrypt_bytes, generate_identity, is_age, DecryptError, HeaderError, Identity, SCRYPT_LOG_N,
};
use crate::exit::{self, UsageError};
use crate::platform::file::PortableOpenOptions as _;
use crate::site::Site;

/// The manifest mark recording when a site's key was last proven.
pub fn verified_mark(site: &str) -> String {
    format!("key-verified/{site}")
}

const LOST_KEY: &str = "KEEP THIS KEY SAFE. Everything encrypted to it can be read only with it (or with another recipient's key): if it is lost, the backups encrypted to it are lost for good. Print a paper copy (`lomob key export --paper`) and keep it offline.";

pub fn run(ctx: &Context, cmd: KeyCommand) -> anyhow::Result<u8> {
    match cmd {
        KeyCommand::Generate {
            output,
            passphrase_env,
            protect,
        } => generate(ctx, &output, passphrase_env.as_deref(), protect),
        KeyCommand::Export {
            identity,
            site,
            paper: _,
        } => export(ctx, identity.as_deref(), site.as_deref()),
        KeyCommand::Verify { site, identity } => verify(ctx, &site, identity.as_deref()),
    }
}

/// Makes a new identity and writes it to `output` (which must not exist: a key is never
/// overwritten), owner-only, with its creation time and public key as comments (`made_by`
/// says what made it); with `passphrase`, in age's passphrase-protected form. Returns the
/// public key.
pub(super) fn write_new_identity(
    output: &Path,
    made_by: &str,
    passphrase: Option<&[u8]>,
) -> anyhow::Result<String> {
    let id = generate_identity();
    let recipient = id.to_recipient().to_string();
    let text = format!(
        "# created: {}{made_by}\n# public key: {recipient}\n{}\n",
        crate::manifest::rfc3339(crate::manifest::now()),
        id.expose_secret()
    );
    let bytes = match passphrase {
        Some(p) => crate::crypt::passphrase_protect(text.as_bytes(), p, SCRYPT_LOG_N),
        None => text.into_bytes(),
    };
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .owner_only()
        .open(output)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::Error::from(UsageError(format!(
                    "{} already exists: lomob never overwrites a key (it may be the only one that opens your backups); choose another --output",
                    output.display()
                )))
            } else {
                anyhow::anyhow!("cannot create {}: {e}", output.display())
            }
        })?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(recipient)
}

#[derive(Serialize)]
struct Generated {
    file: String,
    recipient: String,
    protected: bool,
}

fn generate(
    ctx: &Context,
    output: &Path,
    passphrase_env: Option<&str>,
    protect: bool,
) -> anyhow::Result<u8> {
    let passphrase = match (passphrase_env, protect) {
        (Some(var), _) => Some(
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| UsageError(format!("environment variable {var} is not set or empty: it must hold the passphrase")))?
                .into_bytes(),
        ),
        (None, true) => {
            let first = prompt_passphrase("New passphrase for the identity file: ")
                .ok_or_else(|| UsageError("--protect needs a terminal to ask for the passphrase (or use --passphrase-env VAR)".into()))?;
            let again = prompt_passphrase("The same passphrase again: ").unwrap_or_default();
            if first != again {
                return Err(UsageError("the two passphrases differ; nothing was written".into()).into());
            }
            Some(first)
        }
        (None, false) => None,
    };
    let recipient = write_new_identity(output, "", passphrase.as_deref())?;
    if ctx.json {
        super::output::json(&Generated {
            file: output.display().to_string(),
            recipient,
            protected: passphrase.is_some(),
        })?;
    } else {
        let mut out = super::output::stdout();
        writeln!(
            out,
            "wrote {} (mode 0600){}",
            output.display(),
            if passphrase.is_some() {
                ", protected by a passphrase"
            } else {
                ""
            }
        )?;
        writeln!(
            out,
            "public key (put it in encryption.recipients): {recipient}"
        )?;
        writeln!(out)?;
        writeln!(out, "{LOST_KEY}")?;
    }
    Ok(exit::SUCCESS)
}

/// The identity file to use: the one given, or the one the site's profile names.
fn identity_source(
    ctx: &Context,
    file: Option<&Path>,
    site: Option<&str>,
) -> anyhow::Result<(PathBuf, Vec<Identity>)> {
    let config = match (file, site) {
        (Some(f), _) => crate::config::IdentityConfig {
            file: f.to_path_buf(),
            passphrase: None,
        },
        (None, Some(site)) => ctx
            .site_config(site)?
            .encryption
            .as_ref()
            .and_then(|e| e.identity.clone())
            .ok_or_else(|| UsageError(format!("site {site} names no identity file (encryption.identity): give one with --identity FILE")))?,
        (None, None) => return Err(UsageError("give --identity FILE or --site NAME".into()).into()),
    };
    let ids = load_identities(&config)
        .map_err(|e| UsageError(format!("identity file {}: {e}", config.file.display())))?;
    Ok((config.file, ids))
}

fn export(ctx: &Context, file: Option<&Path>, site: Option<&str>) -> anyhow::Result<u8> {
    let (path, ids) = identity_source(ctx, file, site)?;
    warn_if_shared(&path);
    let mut out = super::output::stdout();
    for id in &ids {
        let secret = id.expose_secret();
        writeln!(out, "lomob recovery key (age identity)")?;
        writeln!(out, "=================================")?;
        writeln!(
            out,
            "printed: {}",
            crate::manifest::rfc3339(crate::manifest::now())
        )?;
        writeln!(out, "public key: {}", id.to_recipient())?;
        writeln!(out)?;
        writeln!(
            out,
            "secret key, in groups of 10 characters (type it on one line, without spaces):"
        )?;
        let groups: Vec<String> = secret
            .as_bytes()
            .chunks(10)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        for line in groups.chunks(4) {
            writeln!(out, "  {}", line.join(" "))?;
        }
        writeln!(out)?;
        if let Ok(code) = qrcode::QrCode::new(secret.as_bytes()) {
            let art = code
                .render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build();
            writeln!(out, "{art}")?;
            writeln!(out)?;
        }
        writeln!(
            out,
            "To decrypt any object of an encrypted site without lomob:"
        )?;
        writeln!(
            out,
            "  1. write the secret key (one line, AGE-SECRET-KEY-1...) into a file, key.txt"
        )?;
        writeln!(out, "  2. age -d -i key.txt OBJECT > OUTPUT     (the `age` tool, https://age-encryption.org)")?;
        writeln!(
            out,
            "  Images (archive/*.iso) decrypt to ISO 9660 images any archiver opens;"
        )?;
        writeln!(
            out,
            "  staged objects (stage/*) to the original files; meta/manifest-* to the manifest,"
        )?;
        writeln!(
            out,
            "  which `lomob recover` reads. With lomob, put the file in the profile:"
        )?;
        writeln!(
            out,
            "  identity = {{ file = \"key.txt\" }} under [sites.NAME.encryption]."
        )?;
        writeln!(out)?;
        writeln!(out, "{LOST_KEY}")?;
    }
    Ok(exit::SUCCESS)
}

#[derive(Serialize)]
struct Verified {
    site: String,
    object: String,
    bytes: u64,
    recipient: String,
}

fn verify(ctx: &Context, name: &str, file: Option<&Path>) -> anyhow::Result<u8> {
    let config = ctx.site_config(name)?;
    if config.encryption.is_none() {
        return Err(UsageError(format!(
            "site {name} is not encrypted (no [sites.{name}.encryption])"
        ))
        .into());
    }
    // The site opened with the identity to prove (read once: a passphrase is asked once),
    // so catalogs read through it are decrypted with that identity only.
    let mut with_key = config.clone();
    if let (Some(f), Some(e)) = (file, with_key.encryption.as_mut()) {
        e.identity = Some(crate::config::IdentityConfig {
            file: f.to_path_buf(),
            passphrase: None,
        });
    }
    let site = Site::open(name, &with_key)?;
    let crypt = site.crypt.clone().expect("an encrypted site has keys");
    let ids = crypt.identities().map_err(|e| {
        UsageError(format!(
            "{e}: give the identity to prove with --identity FILE"
        ))
    })?;
    let path = with_key
        .encryption
        .as_ref()
        .and_then(|e| e.identity.as_ref())
        .map(|i| i.file.clone())
        .expect("identities() found one");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The smallest encrypted objects on the stage: staged copies and manifest snapshots.
    // One that opens proves the key; one encrypted to other keys disproves it; a damaged
    // one proves nothing either way, so the next is tried (and the damage reported).
    let (key, bytes) = rt.block_on(async {
        let mut objects = site.stage.list(crate::keys::STAGE).await?;
        objects.extend(
            site.stage
                .list(crate::keys::META)
                .await?
                .into_iter()
                .filter(|o| o.key.contains("manifest-")),
        );
        objects.sort_by_key(|o| o.size);
        let mut damaged = Vec::new();
        // Objects from before encryption was turned on are plain: look past them.
        for o in objects.iter().take(20) {
            let b = site.stage.read_range(&o.key, 0..o.size).await?;
            if !is_age(&b) {
                continue;
            }
            match decrypt_bytes(ids, &b) {
                Ok(_) => return Ok::<_, anyhow::Error>((o.key.clone(), b)),
                Err(e @ DecryptError::Header(HeaderError::NoMatchingIdentity)) => {
                    return Err(anyhow::anyhow!(
                        "{} does not open {} of site {name}: {e}. This key cannot restore the site: find the right one, or add its public key to encryption.recipients (that covers new objects only)",
                        path.display(),
                        o.key
                    ))
                }
                Err(e) => {
                    tracing::warn!("site {name}: {} is damaged ({e}); `lomob check --site {name} --stage --deep` reports such objects", o.key);
                    damaged.push(o.key.clone());
                }
            }
        }
        // Nothing on the stage (all archived and freed, or a stage lost): the hot catalogs
        // of encrypted images, decrypted with this identity only.
        let mut catalogs: Vec<_> = site
            .archive
            .list(crate::keys::ARCHIVE)
            .await?
            .into_iter()
            .filter(|o| {
                o.key
                    .strip_suffix(".catalog.json")
                    .is_some_and(|image| crate::keys::is_sealed_image_key(name, image))
            })
            .collect();
        catalogs.sort_by_key(|o| o.size);
        for o in catalogs.iter().take(20) {
            match site.archive.read_index(&o.key).await {
                Ok(plain) => return Ok((o.key.clone(), plain)),
                Err(e) if e.kind() == lomob_backends::ErrorKind::Integrity => {
                    tracing::warn!("site {name}: {} is damaged ({e})", o.key);
                    damaged.push(o.key.clone());
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "{} does not open {} of site {name}: {e}. This key cannot restore the site",
                        path.display(),
                        o.key
                    ))
                }
            }
        }
        Err(anyhow::anyhow!(
            "site {name} holds no readable encrypted object on its stage or among its catalogs{}: run `lomob backup` (or `lomob sync --site {name}`) first, then verify",
            if damaged.is_empty() { String::new() } else { format!(" ({} damaged)", damaged.len()) }
        ))
    })?;
    let m = ctx.open_manifest()?;
    m.set_mark(&verified_mark(name), crate::manifest::now())?;
    m.flush()?;
    let recipient = ids[0].to_recipient().to_string();
    if ctx.json {
        super::output::json(&Verified {
            site: name.into(),
            object: key,
            bytes: bytes.len() as u64,
            recipient,
        })?;
    } else {
        println!(
            "ok: {} opens {key} of site {name} ({} bytes read); this key can restore the site",
            path.display(),
            bytes.len()
        );
    }
    Ok(exit::SUCCESS)
}

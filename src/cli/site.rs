//! `lomob site list`: what each site is made of, with secrets shown only as where they come
//! from.

use std::io::Write;

use serde::Serialize;

use super::args::SiteCommand;
use super::Context;
use crate::config::SiteConfig;
use crate::exit;
use lomob_backends::Capabilities;

#[derive(Serialize)]
struct SiteView<'a> {
    name: &'a str,
    stage_capabilities: Capabilities,
    archive_capabilities: Capabilities,
    config: &'a SiteConfig,
}

pub fn run(ctx: &Context, cmd: SiteCommand) -> anyhow::Result<u8> {
    match cmd {
        SiteCommand::List => list(ctx),
        SiteCommand::Test { name } => super::site_test::run(ctx, &name),
        SiteCommand::Claim { name } => super::site_test::claim(ctx, &name),
        SiteCommand::Auth(a) => super::site_auth::run(ctx, a),
        SiteCommand::Pair(a) => super::site_pair::run(ctx, a),
    }
}

fn list(ctx: &Context) -> anyhow::Result<u8> {
    let sites: Vec<SiteView> = ctx
        .config
        .config
        .sites
        .iter()
        .map(|(name, config)| SiteView {
            name,
            stage_capabilities: config.stage.capabilities(),
            archive_capabilities: config.archive.capabilities(),
            config,
        })
        .collect();
    if ctx.json {
        super::output::json(&sites)?;
        return Ok(exit::SUCCESS);
    }
    let mut out = super::output::stdout();
    if ctx.config.sources.is_empty() {
        writeln!(out, "configuration: embedded default (no config file)")?;
    } else {
        let files: Vec<String> = ctx
            .config
            .sources
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        writeln!(out, "configuration: {}", files.join(", "))?;
    }
    if sites.is_empty() {
        writeln!(
            out,
            "no sites configured: add a [sites.NAME] section (see profiles/)"
        )?;
    }
    for s in &sites {
        writeln!(out, "\nsite {}", s.name)?;
        for (role, cfg, caps) in [
            ("stage", &s.config.stage, &s.stage_capabilities),
            ("archive", &s.config.archive, &s.archive_capabilities),
        ] {
            let mut notes = Vec::new();
            if caps.needs_thaw {
                notes.push("needs thaw before reads".to_string());
            }
            if caps.min_storage_days > 0 {
                notes.push(format!("{} days minimum storage", caps.min_storage_days));
            }
            if let Some(c) = &caps.storage_class {
                notes.push(format!("class {c}"));
            }
            if let Some(l) = caps.one_shot_limit {
                notes.push(format!("files over {l} skip it"));
            }
            if let Some(q) = caps.free_quota {
                notes.push(format!("free quota {q}"));
            }
            writeln!(out, "  {role:<8} {}  {}", cfg.kind(), notes.join(", "))?;
            let toml = toml_line(cfg)?;
            writeln!(out, "           {toml}")?;
        }
        writeln!(
            out,
            "  pack at {} staged, images of {}; sync {}, check stage {}, check archive {}",
            s.config.pack_threshold,
            s.config.iso_size,
            s.config.schedule.sync,
            s.config.schedule.check_stage,
            s.config.schedule.check_archive
        )?;
        match &s.config.encryption {
            Some(e) => writeln!(
                out,
                "  encryption: age, to {} recipient(s){}",
                e.recipients.len(),
                e.identity
                    .as_ref()
                    .map(|i| format!(", identity {}", i.file.display()))
                    .unwrap_or_else(|| ", no identity (backing up only)".into())
            )?,
            None => writeln!(out, "  encryption: off")?,
        }
        if s.config.alert.email.is_empty() {
            writeln!(out, "  alerts: log only (no email configured)")?;
        } else {
            writeln!(out, "  alerts: email {}", s.config.alert.email.join(", "))?;
        }
    }
    Ok(exit::SUCCESS)
}

/// A backend section as one `key = value` line (secrets redacted by their serializer).
fn toml_line<T: Serialize>(v: &T) -> anyhow::Result<String> {
    let value = serde_json::to_value(v)?;
    let mut parts = Vec::new();
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            if k == "kind" || v.is_null() {
                continue;
            }
            parts.push(format!("{k} = {v}"));
        }
    }
    Ok(parts.join(", "))
}

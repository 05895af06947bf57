//! The alerts of a sync or a check, built from their reports, and `lomob alert test`.

use super::output::{self, Table};
use super::Context;
use crate::alert::{self, Alert, Ping};
use crate::check::{PartReport, SiteCheck};
use crate::exit::{self, UsageError};
use crate::manifest::Manifest;
use crate::sync::SiteReport;

/// Sends the alerts of a sync of `reports` (failures, silent changes, stale sites).
pub fn after_sync(ctx: &Context, m: &Manifest, reports: &[SiteReport]) -> anyhow::Result<()> {
    let mut looked_at = Vec::new();
    let mut current = Vec::new();
    for r in reports {
        // The daemon retries a failed scheduled sync and alerts once retries run out.
        if r.ok || !ctx.held_alerts {
            looked_at.push(format!("sync:{}", r.site));
        }
        looked_at.push(format!("silent:{}", r.site));
        if !r.ok && !ctx.held_alerts {
            current.push(Alert {
                site: Some(r.site.clone()),
                source: format!("sync:{}", r.site),
                subject: format!("lomob: the sync of site {} failed", r.site),
                lines: r
                    .errors
                    .iter()
                    .map(|e| format!("{} ({:?})", e.message, e.kind))
                    .chain([format!(
                        "run `lomob sync --site {}` again once this is fixed",
                        r.site
                    )])
                    .collect(),
                event: false,
            });
        }
        if !r.silent_changes.is_empty() {
            current.push(Alert {
                site: Some(r.site.clone()),
                source: format!("silent:{}", r.site),
                subject: format!(
                    "lomob: {} file(s) changed without a new date (possible silent corruption)",
                    r.silent_changes.len()
                ),
                lines: r
                    .silent_changes
                    .iter()
                    .map(|e| format!(
                        "{}: backed up as a new version, the earlier one is kept; if the change is damage, `lomob restore '{}' --version N --to / --overwrite` puts an earlier version back (`lomob list files` shows the versions)",
                        e.path, e.path
                    ))
                    .collect(),
                event: true,
            });
        }
    }
    send(ctx, m, looked_at, current)
}

/// Sends the alerts of a check: findings and parts that could not run, per source.
pub fn after_check(
    ctx: &Context,
    m: &Manifest,
    sites: &[SiteCheck],
    local: Option<&PartReport>,
) -> anyhow::Result<()> {
    let mut looked_at = Vec::new();
    let mut current = Vec::new();
    let parts = sites
        .iter()
        .flat_map(|s| s.parts.iter().map(move |p| (Some(s.site.as_str()), p)))
        .chain(local.map(|p| (None, p)));
    for (site, p) in parts {
        let source = match site {
            Some(s) => format!("check-{}:{s}", p.part),
            None => "check-local".to_string(),
        };
        // A scheduled check that could not run is retried by the daemon first.
        if p.error.is_some() && ctx.held_alerts {
            continue;
        }
        looked_at.push(source.clone());
        let place = site.map_or("the library".to_string(), |s| format!("site {s}"));
        if let Some(e) = &p.error {
            current.push(Alert {
                site: site.map(str::to_string),
                source,
                subject: format!("lomob: the {} check of {place} could not run", p.part),
                lines: vec![e.message.clone()],
                event: false,
            });
        } else if !p.findings.is_empty() {
            let n = p.findings.len();
            current.push(Alert {
                site: site.map(str::to_string),
                source,
                subject: format!(
                    "lomob: {n} problem{} on {place} ({} check)",
                    if n == 1 { "" } else { "s" },
                    p.part
                ),
                lines: p
                    .findings
                    .iter()
                    .map(|f| match &f.fix {
                        Some(fix) => format!("{}: {}\nfix: {fix}", f.what, f.message),
                        None => format!("{}: {}", f.what, f.message),
                    })
                    .collect(),
                event: false,
            });
        }
    }
    send(ctx, m, looked_at, current)
}

/// Raises (`Some`) or resolves (`None`) one alert of the daemon's own.
pub fn daemon_alert(
    ctx: &Context,
    m: &Manifest,
    source: &str,
    site: Option<&str>,
    alert: Option<(String, Vec<String>)>,
) -> anyhow::Result<()> {
    let current = alert
        .map(|(subject, lines)| Alert {
            site: site.map(str::to_string),
            source: source.to_string(),
            subject,
            lines,
            event: false,
        })
        .into_iter()
        .collect();
    send(ctx, m, vec![source.to_string()], current)
}

/// Adds the stale-site alerts and sends everything due.
fn send(
    ctx: &Context,
    m: &Manifest,
    mut looked_at: Vec<String>,
    mut current: Vec<Alert>,
) -> anyhow::Result<()> {
    let config = &ctx.config.config;
    let at = alert::now();
    current.extend(alert::stale(m, config, at)?);
    looked_at.extend(config.sites.keys().map(|s| alert::stale_source(s)));
    let rt = super::sync_cmd::runtime()?;
    let sent = rt.block_on(alert::run(m, config, &looked_at, current))?;
    for s in sent.iter().filter(|s| !s.ok) {
        crate::progress::suspend(|| {
            eprintln!(
                "warning: the alert by {} to {} could not be sent: {}",
                s.channel,
                s.to,
                s.error.as_deref().unwrap_or("")
            )
        });
    }
    Ok(())
}

/// Opens the manifest for a run of `sites` that alerts. When another lomob process holds
/// it the run cannot happen: that is alerted on every channel of those sites, and the
/// heartbeats fail. (Without the manifest there is no record of earlier alerts, so this
/// one is not held back by `repeat-after`; one per refused run.)
pub fn open_for_run(
    ctx: &Context,
    sites: &[String],
    what: &str,
) -> anyhow::Result<std::sync::Arc<Manifest>> {
    let err = match ctx.open_manifest() {
        Ok(m) => return Ok(m),
        Err(e) => e,
    };
    let busy = err.chain().any(|c| {
        matches!(
            c.downcast_ref(),
            Some(crate::manifest::ManifestError::InUse { .. })
        )
    });
    if busy {
        let scopes: Vec<Option<String>> = if sites.is_empty() {
            vec![None]
        } else {
            sites.iter().cloned().map(Some).collect()
        };
        let out: Vec<alert::Outgoing> = scopes
            .into_iter()
            .map(|site| alert::Outgoing {
                alert: Alert {
                    source: format!("lock:{}", site.as_deref().unwrap_or("")),
                    subject: format!(
                        "lomob: the {what}{} could not run: the manifest is in use by another lomob process",
                        site.as_deref().map(|s| format!(" of site {s}")).unwrap_or_default()
                    ),
                    lines: vec![format!(
                        "{err}; this run was skipped (the other process may be a long upload: the next run goes on)"
                    )],
                    site,
                    event: true,
                },
                resolved: false,
            })
            .collect();
        if let Ok(rt) = super::sync_cmd::runtime() {
            rt.block_on(alert::deliver(&ctx.config.config, &out));
        }
        ping(ctx, sites, Ping::Fail, &err.to_string());
    }
    Err(err)
}

/// Heartbeat pings around a run of `sites`.
pub fn ping(ctx: &Context, sites: &[String], what: Ping, summary: &str) {
    if ctx.held_alerts && matches!(what, Ping::Fail) {
        return;
    }
    if alert::heartbeats(&ctx.config.config, sites).is_empty() {
        return;
    }
    if let Ok(rt) = super::sync_cmd::runtime() {
        rt.block_on(alert::ping(&ctx.config.config, sites, what, summary));
    }
}

/// `lomob alert test [--site NAME]`: a test message on every configured channel.
pub fn test(ctx: &Context, site: Option<String>) -> anyhow::Result<u8> {
    let config = &ctx.config.config;
    let mut scopes: Vec<Option<String>> = Vec::new();
    match &site {
        Some(s) => {
            ctx.site_config(s)?;
            scopes.push(Some(s.clone()));
        }
        None => {
            scopes.push(None);
            scopes.extend(
                config
                    .sites
                    .iter()
                    .filter(|(_, c)| c.alert.has_channel())
                    .map(|(n, _)| Some(n.clone())),
            );
        }
    }
    let rt = super::sync_cmd::runtime()?;
    let mut rows = Vec::new();
    for scope in scopes {
        let a = config.alert_for(scope.as_deref());
        let label = scope.clone().unwrap_or_else(|| "[alert]".into());
        let test = alert::Outgoing {
            alert: Alert {
                site: scope.clone(),
                source: format!("test:{label}"),
                subject: format!("lomob: test alert for {label}"),
                lines: vec!["This is a test: alerts from lomob reach you on this channel.".into()],
                event: true,
            },
            resolved: false,
        };
        for s in rt.block_on(alert::deliver(config, std::slice::from_ref(&test))) {
            rows.push((label.clone(), s.channel, s.to, s.ok, s.error));
        }
        if let Some(h) = &a.heartbeat {
            let r = rt.block_on(alert::http::ping(
                h,
                Ping::Success,
                "lomob alert test".into(),
            ));
            rows.push((
                label.clone(),
                "heartbeat".into(),
                h.describe(),
                r.is_ok(),
                r.err(),
            ));
        }
    }
    if rows.is_empty() {
        anyhow::bail!(UsageError(
            "no alert channel is configured: add email, webhook or heartbeat to [alert] or [sites.NAME.alert]".into()
        ));
    }
    let ok = rows.iter().all(|r| r.3);
    if ctx.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(scope, channel, to, ok, error)| {
                serde_json::json!({"scope": scope, "channel": channel, "to": to, "ok": ok, "error": error})
            })
            .collect();
        output::json(&v)?;
    } else {
        let mut t = Table::new(&["FOR", "CHANNEL", "TO", "RESULT"]);
        for (scope, channel, to, ok, error) in &rows {
            t.row(vec![
                scope.clone(),
                channel.clone(),
                to.clone(),
                if *ok {
                    "sent".into()
                } else {
                    format!("FAILED: {}", error.as_deref().unwrap_or(""))
                },
            ]);
        }
        t.print(&mut super::output::stdout())?;
    }
    Ok(if ok { exit::SUCCESS } else { exit::FAILURE })
}

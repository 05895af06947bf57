//! Telling the user: email, a webhook and heartbeat pings, without flooding them.
//!
//! A run (a sync, a check) builds the alerts for the sources it looked at: check findings,
//! a failed run, silent changes, a site not synced for too long. [`plan`] compares them with
//! the last alert of each source kept in the manifest: an identical alert goes out again at
//! most once per `repeat-after`, a changed one at once, and a source that cleared sends one
//! "resolved". [`deliver`] sends them on every channel of the site's `[alert]` section
//! (or the global one); [`commit`] records what went out, so a failed delivery is tried
//! again by the next run. Heartbeats (healthchecks.io's convention) are sent around each
//! run, so a run that never happens is noticed by the service. Webhook and heartbeat URLs
//! and the SMTP password are secrets: never logged, never in an error message.

pub mod email;
pub mod http;

use serde::Serialize;
use sha2::Digest;

use crate::config::{AlertConfig, Config};
use crate::manifest::{self, AlertState, Manifest, ManifestError};

/// Test-only: the clock alerts use, in unix seconds, so repeats can be tested.
pub const CLOCK_ENV: &str = "LOMOB_TEST_NOW";

/// The time alerts are judged by.
pub fn now() -> i64 {
    std::env::var(CLOCK_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(manifest::now)
}

/// One alert.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// The site it is about; `None` for the library.
    pub site: Option<String>,
    /// What produced it: `check-stage:SITE`, `sync:SITE`, `stale:SITE`, `check-local`...
    pub source: String,
    /// One line: what happened and where.
    pub subject: String,
    /// Each problem, with its path and the command that fixes it.
    pub lines: Vec<String>,
    /// Something that happened rather than a lasting state: no "resolved" follows.
    #[serde(skip)]
    pub event: bool,
}

impl Alert {
    fn fingerprint(&self) -> String {
        let mut h = sha2::Sha256::new();
        h.update(self.subject.as_bytes());
        for l in &self.lines {
            h.update(b"\n");
            h.update(l.as_bytes());
        }
        hex::encode(&h.finalize()[..12])
    }

    /// The plain-text body of a mail (and the webhook's `text`).
    pub fn body(&self, resolved: bool) -> String {
        let host = hostname();
        let mut out = if resolved {
            format!(
                "{}\n\nThis has cleared: the last run found none of it.\n",
                self.subject
            )
        } else {
            let mut s = format!("{}\n\n", self.subject);
            for l in &self.lines {
                s.push_str("- ");
                s.push_str(&l.replace('\n', "\n  "));
                s.push('\n');
            }
            s
        };
        out.push_str(&format!(
            "\nSent by lomob {} on {host} at {}.\n",
            env!("CARGO_PKG_VERSION"),
            manifest::rfc3339(now())
        ));
        out
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".into())
}

/// An alert to send, or the news that one cleared.
#[derive(Clone, Debug, Serialize)]
pub struct Outgoing {
    #[serde(flatten)]
    pub alert: Alert,
    pub resolved: bool,
}

impl Outgoing {
    pub fn subject(&self) -> String {
        if self.resolved {
            format!(
                "lomob: resolved: {}",
                self.alert.subject.trim_start_matches("lomob: ")
            )
        } else {
            self.alert.subject.clone()
        }
    }
}

/// What one channel did with one alert.
#[derive(Clone, Debug, Serialize)]
pub struct Sent {
    pub source: String,
    pub channel: String,
    /// Where it went, safe to show (an address; a secret URL only by where it comes from).
    pub to: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Decides which of `current` (the alerts of the sources in `looked_at`) go out now, and
/// which earlier alerts of those sources have cleared.
pub fn plan(
    m: &Manifest,
    config: &Config,
    looked_at: &[String],
    current: Vec<Alert>,
    at: i64,
) -> Result<Vec<Outgoing>, ManifestError> {
    let mut out = Vec::new();
    let sources: std::collections::HashSet<&str> =
        current.iter().map(|a| a.source.as_str()).collect();
    for (source, state) in m.alert_states()? {
        if looked_at.contains(&source) && !sources.contains(source.as_str()) {
            if state.event {
                m.remove_alert_state(&source)?;
            } else {
                out.push(Outgoing {
                    alert: Alert {
                        site: site_of(&source),
                        source: source.clone(),
                        subject: state.subject.clone(),
                        lines: Vec::new(),
                        event: false,
                    },
                    resolved: true,
                });
            }
        }
    }
    for a in current {
        let repeat = config.alert_for(a.site.as_deref()).repeat_after();
        let due = match m.alert_state(&a.source)? {
            None => true,
            Some(s) => s.fingerprint != a.fingerprint() || at - s.last_sent >= repeat,
        };
        if due {
            out.push(Outgoing {
                alert: a,
                resolved: false,
            });
        }
    }
    Ok(out)
}

fn site_of(source: &str) -> Option<String> {
    source.split_once(':').map(|(_, s)| s.to_string())
}

/// Sends each alert on every channel of its settings. Without any channel it is only
/// logged, which counts as delivered.
pub async fn deliver(config: &Config, out: &[Outgoing]) -> Vec<Sent> {
    let mut sent = Vec::new();
    for o in out {
        let a = config.alert_for(o.alert.site.as_deref());
        let subject = o.subject();
        let body = o.alert.body(o.resolved);
        if o.resolved {
            tracing::info!("alert: {subject}");
        } else {
            tracing::warn!("alert: {subject}");
        }
        for (channel, to, result) in send_all(a, &subject, &body, o).await {
            sent.push(Sent {
                source: o.alert.source.clone(),
                channel,
                to,
                ok: result.is_ok(),
                error: result.err(),
            });
        }
    }
    sent
}

async fn send_all(
    a: &AlertConfig,
    subject: &str,
    body: &str,
    o: &Outgoing,
) -> Vec<(String, String, Result<(), String>)> {
    let mut results = Vec::new();
    if !a.email.is_empty() {
        let (cfg, s, b) = (a.clone(), subject.to_string(), body.to_string());
        let r = tokio::task::spawn_blocking(move || email::send(&cfg, &s, &b))
            .await
            .unwrap_or_else(|e| Err(format!("the mail task failed: {e}")));
        results.push(("email".into(), a.email.join(", "), r));
    }
    if let Some(url) = &a.webhook {
        let json = serde_json::json!({
            "subject": subject,
            "site": o.alert.site,
            "source": o.alert.source,
            "resolved": o.resolved,
            "problems": o.alert.lines,
            "text": body,
        });
        let r = http::post(url, "application/json", json.to_string()).await;
        results.push(("webhook".into(), url.describe(), r));
    }
    results
}

/// Records what went out: an alert counts as sent when any channel took it (or there was
/// none); a resolved source is forgotten.
pub fn commit(m: &Manifest, out: &[Outgoing], sent: &[Sent], at: i64) -> Result<(), ManifestError> {
    for o in out {
        let results: Vec<&Sent> = sent.iter().filter(|s| s.source == o.alert.source).collect();
        if !results.is_empty() && !results.iter().any(|s| s.ok) {
            continue;
        }
        if o.resolved {
            m.remove_alert_state(&o.alert.source)?;
            continue;
        }
        let first = m.alert_state(&o.alert.source)?.map_or(at, |s| s.first_sent);
        m.put_alert_state(
            &o.alert.source,
            &AlertState {
                fingerprint: o.alert.fingerprint(),
                subject: o.alert.subject.clone(),
                first_sent: first,
                last_sent: at,
                event: o.alert.event,
            },
        )?;
    }
    Ok(())
}

/// Plans, sends and records the alerts of a run; returns what each channel did.
pub async fn run(
    m: &Manifest,
    config: &Config,
    looked_at: &[String],
    current: Vec<Alert>,
) -> Result<Vec<Sent>, ManifestError> {
    let at = now();
    let out = plan(m, config, looked_at, current, at)?;
    let sent = deliver(config, &out).await;
    commit(m, &out, &sent, at)?;
    for s in sent.iter().filter(|s| !s.ok) {
        tracing::error!(
            "alert {} by {} to {} failed: {}",
            s.source,
            s.channel,
            s.to,
            s.error.as_deref().unwrap_or("")
        );
    }
    Ok(sent)
}

/// Sites with no successful sync for longer than their `stale-after`, as alerts.
pub fn stale(m: &Manifest, config: &Config, at: i64) -> Result<Vec<Alert>, ManifestError> {
    let mut last_ok: std::collections::HashMap<String, i64> = Default::default();
    let mut first_run = None;
    for kv in m.runs() {
        let (_, r) = kv?;
        first_run = Some(first_run.map_or(r.started, |f: i64| f.min(r.started)));
        if let Some(site) = r.command.strip_prefix("sync:") {
            if r.ok {
                let e = last_ok.entry(site.to_string()).or_insert(r.ended);
                *e = (*e).max(r.ended);
            }
        }
    }
    let mut out = Vec::new();
    for name in config.sites.keys() {
        let limit = config.alert_for(Some(name)).stale_after();
        // A site never synced counts from the first run this manifest recorded.
        let Some(since) = last_ok.get(name).copied().or(first_run) else {
            continue;
        };
        if at - since > limit {
            let days = (at - since) / 86_400;
            out.push(Alert {
                site: Some(name.clone()),
                source: stale_source(name),
                subject: format!("lomob: site {name} has not been backed up for {days} days"),
                lines: vec![format!(
                    "no successful sync of site {name} since {}: run `lomob sync --site {name}` and read its errors (`lomob status` shows the last runs)",
                    manifest::rfc3339(since)
                )],
                event: false,
            });
        }
    }
    Ok(out)
}

pub fn stale_source(site: &str) -> String {
    format!("stale:{site}")
}

/// The heartbeat URLs that apply to `sites` (each once).
pub fn heartbeats<'a>(config: &'a Config, sites: &[String]) -> Vec<&'a lomob_backends::Secret> {
    let mut out: Vec<&lomob_backends::Secret> = Vec::new();
    let all = sites
        .iter()
        .map(|s| Some(s.as_str()))
        .chain(sites.is_empty().then_some(None));
    for s in all {
        if let Some(h) = &config.alert_for(s).heartbeat {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

/// Pings each heartbeat: `URL/start`, `URL` (success) or `URL/fail`, with `summary` (cut at
/// 100 KB). A failed ping is logged; it never fails the run.
pub async fn ping(config: &Config, sites: &[String], what: Ping, summary: &str) {
    for h in heartbeats(config, sites) {
        let body: String = summary.chars().take(100_000).collect();
        if let Err(e) = http::ping(h, what, body).await {
            tracing::warn!("heartbeat {}: {e}", h.describe());
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

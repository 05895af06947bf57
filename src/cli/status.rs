//! `lomob status`: totals of files and bytes by state, and the last scan.

use std::io::Write;

use lomob_backends::ByteSize;
use serde::Serialize;

use super::output::{self, Table};
use super::Context;
use crate::exit;

#[derive(Serialize, Default)]
struct Totals {
    files: u64,
    bytes: u64,
}

impl From<crate::manifest::Tally> for Totals {
    fn from(t: crate::manifest::Tally) -> Self {
        Totals {
            files: t.files,
            bytes: t.bytes,
        }
    }
}

/// What `--recount` found: the counters that had drifted from the records (now repaired).
#[derive(Serialize)]
struct Recount {
    drift: Vec<String>,
}

#[derive(Serialize)]
struct DaemonState {
    pid: u32,
    roots: std::collections::BTreeMap<std::path::PathBuf, crate::daemon::watch::RootState>,
}

#[derive(Serialize, Default)]
struct Status {
    /// Set when a running daemon answered: its watcher's state per root.
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<DaemonState>,
    /// Set by `--recount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    recount: Option<Recount>,
    manifest: String,
    roots: Vec<String>,
    present: Totals,
    deleted: Totals,
    /// Every version of every path (what must stay restorable).
    versions: Totals,
    /// Distinct contents (what is actually stored, once each).
    contents: Totals,
    last_scan: Option<LastRun>,
    /// Versions whose bytes changed while size, mtime and inode did not (possible silent
    /// corruption); each was backed up as a new version.
    silent_changes: u64,
    /// Versions that changed before any copy was made: they can never be backed up.
    lost_versions: Totals,
    /// The last `lomob check --local`.
    local_check: Option<LastCheck>,
    sites: Vec<SiteStatus>,
}

#[derive(Serialize)]
struct LastCheck {
    part: String,
    ran: String,
    checked: bool,
    problems: u64,
    summary: Vec<String>,
}

impl LastCheck {
    fn of(c: crate::manifest::CheckRecord) -> Self {
        LastCheck {
            part: c.part,
            ran: output::rfc3339(c.ran),
            checked: c.checked,
            problems: c.problems,
            summary: c.summary,
        }
    }

    fn line(&self) -> String {
        format!(
            "last {} check {}: {}",
            self.part,
            self.ran,
            if !self.checked {
                "could not check".to_string()
            } else if self.problems == 0 {
                "clean".to_string()
            } else {
                format!("{} problem(s) (`lomob check` lists them)", self.problems)
            }
        )
    }
}

#[derive(Serialize)]
struct PendingThaw {
    key: String,
    tier: String,
    ready_by: String,
}

#[derive(Serialize, Default)]
struct SiteStatus {
    name: String,
    /// On the stage, not yet in an image.
    staged: Totals,
    /// In verified images on the archive.
    archived: Totals,
    /// Present locally but not yet safe on this site.
    not_yet_safe: Totals,
    /// Staged copies of archived contents still to be deleted (the next sync does).
    waiting_to_free: Totals,
    /// Archive objects lomob does not count (unverified, or found under a wanted name):
    /// billed until deleted, never holding anything as far as lomob is concerned.
    unverified_objects: Totals,
    /// Images chosen for upload by an interrupted run; the next sync continues them.
    interrupted_images: u64,
    /// Thaws a restore asked for and has not used yet: (image key, ready by).
    thaws_pending: Vec<PendingThaw>,
    /// The last run of each part of `lomob check` on this site.
    checks: Vec<LastCheck>,
    images: u64,
    last_sync: Option<LastRun>,
    /// Set for an encrypted site.
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption: Option<EncryptionStatus>,
}

#[derive(Serialize)]
struct EncryptionStatus {
    recipients: usize,
    /// When `lomob key verify` last proved a key opens the site's objects.
    key_verified: Option<String>,
    /// Objects stored before encryption was turned on: plain, and still readable.
    plain_staged: u64,
    plain_images: u64,
}

#[derive(Serialize)]
struct LastRun {
    started: String,
    ended: String,
    ok: bool,
    counts: Vec<(String, u64)>,
}

pub fn run(ctx: &Context, recount: bool) -> anyhow::Result<u8> {
    let m = ctx.open_manifest()?;
    let mut s = Status {
        manifest: m.path().display().to_string(),
        roots: m.roots()?.iter().map(|r| output::show(&r.path)).collect(),
        ..Default::default()
    };
    let totals = if recount {
        let (kept, counted) = m.recount_totals()?;
        s.recount = Some(Recount {
            drift: kept.drift(&counted),
        });
        counted
    } else {
        m.totals()?
    };
    s.present = totals.present.into();
    s.deleted = totals.deleted.into();
    s.versions = totals.versions.into();
    s.contents = totals.contents.into();
    for kv in m.runs() {
        let (_, r) = kv?;
        if r.command == "scan" {
            s.last_scan = Some(LastRun {
                started: output::rfc3339(r.started),
                ended: output::rfc3339(r.ended),
                ok: r.ok,
                counts: r.counts,
            });
            break;
        }
    }
    s.silent_changes = m.silent_changes()?.len() as u64;
    s.local_check = m
        .check_record(crate::check::local::RECORD_SITE, "local")?
        .map(LastCheck::of);
    for l in m.lost_versions()? {
        s.lost_versions.files += 1;
        s.lost_versions.bytes += l.note.size;
    }
    s.sites = sites(ctx, &m, &totals)?;
    s.daemon = crate::daemon::view().map(|v| DaemonState {
        pid: v.pid,
        roots: v.roots,
    });
    if ctx.json {
        output::json(&s)?;
        return Ok(exit::SUCCESS);
    }
    let mut out = super::output::stdout();
    if let Some(r) = &s.recount {
        if r.drift.is_empty() {
            writeln!(out, "recount: the kept totals agree with the records")?;
        } else {
            writeln!(
                out,
                "recount: {} total(s) had drifted from the records and were corrected:",
                r.drift.len()
            )?;
            for d in &r.drift {
                writeln!(out, "  {d}")?;
            }
        }
    }
    writeln!(out, "manifest: {}", s.manifest)?;
    if let Some(d) = &s.daemon {
        writeln!(out, "daemon: running (pid {})", d.pid)?;
        for (root, state) in &d.roots {
            if let crate::daemon::watch::RootState::Degraded { reason } = state {
                writeln!(
                    out,
                    "  watcher degraded for {}: {reason}; rescanned every scan-interval instead",
                    root.display()
                )?;
            }
        }
    }
    if s.roots.is_empty() {
        writeln!(out, "roots: none yet (run `lomob scan DIR`)")?;
    } else {
        writeln!(out, "roots: {}", s.roots.join(", "))?;
    }
    let mut t = Table::new(&["STATE", "FILES", "SIZE"]).right(&[1, 2]);
    for (name, tot) in [
        ("present", &s.present),
        ("deleted locally", &s.deleted),
        ("all versions", &s.versions),
        ("distinct contents", &s.contents),
    ] {
        t.row(vec![
            name.into(),
            tot.files.to_string(),
            ByteSize(tot.bytes).to_string(),
        ]);
    }
    t.print(&mut out)?;
    match &s.last_scan {
        Some(r) => {
            let get = |k: &str| r.counts.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
            writeln!(
                out,
                "last scan: {} ({}): {} new, {} changed, {} deleted, {} errors",
                r.ended.replace('T', " "),
                if r.ok { "ok" } else { "partial" },
                get("new"),
                get("changed"),
                get("deleted"),
                get("errors")
            )?;
        }
        None => writeln!(out, "last scan: never")?,
    }
    if let Some(c) = &s.local_check {
        writeln!(out, "library: {}", c.line())?;
    }
    if s.silent_changes > 0 {
        writeln!(
            out,
            "changed without a new mtime (possible silent corruption): {} version(s), each backed up as a new version (`lomob manifest export` lists them)",
            s.silent_changes
        )?;
    }
    if s.lost_versions.files > 0 {
        writeln!(
            out,
            "lost before any copy was made: {} version(s) ({}); they changed before they could be backed up",
            s.lost_versions.files,
            ByteSize(s.lost_versions.bytes)
        )?;
    }
    if !s.sites.is_empty() {
        writeln!(out)?;
        let mut t = Table::new(&[
            "SITE",
            "STAGED",
            "ARCHIVED",
            "IMAGES",
            "NOT YET SAFE",
            "LAST SYNC",
        ])
        .right(&[1, 2, 3, 4]);
        for site in &s.sites {
            t.row(vec![
                site.name.clone(),
                format!("{} ({})", site.staged.files, ByteSize(site.staged.bytes)),
                format!(
                    "{} ({})",
                    site.archived.files,
                    ByteSize(site.archived.bytes)
                ),
                site.images.to_string(),
                format!(
                    "{} ({})",
                    site.not_yet_safe.files,
                    ByteSize(site.not_yet_safe.bytes)
                ),
                match &site.last_sync {
                    Some(r) => format!(
                        "{} {}",
                        r.ended.replace('T', " "),
                        if r.ok { "ok" } else { "FAILED" }
                    ),
                    None => "never".into(),
                },
            ]);
        }
        t.print(&mut out)?;
        for site in &s.sites {
            if site.waiting_to_free.files > 0 {
                writeln!(
                    out,
                    "{}: {} staged copie(s) of archived files ({}) wait to be freed; the next sync deletes them",
                    site.name,
                    site.waiting_to_free.files,
                    ByteSize(site.waiting_to_free.bytes)
                )?;
            }
            if site.interrupted_images > 0 {
                writeln!(
                    out,
                    "{}: {} image(s) of an interrupted run; the next sync continues or records them",
                    site.name, site.interrupted_images
                )?;
            }
            for c in &site.checks {
                writeln!(out, "{}: {}", site.name, c.line())?;
            }
            for t in &site.thaws_pending {
                writeln!(
                    out,
                    "{}: thaw of {} ({} tier) requested by a restore, ready by {}; run the restore again to finish it",
                    site.name, t.key, t.tier, t.ready_by
                )?;
            }
            if let Some(e) = &site.encryption {
                if e.key_verified.is_none() {
                    writeln!(
                        out,
                        "{}: encrypted, but no key was ever shown to open its objects: run `lomob key verify --site {} --identity RECOVERY-KEY-FILE` (a lost key means lost data)",
                        site.name, site.name
                    )?;
                }
                if e.plain_staged + e.plain_images > 0 {
                    writeln!(
                        out,
                        "{}: {} staged cop(ies) and {} image(s) were stored before encryption was turned on: they are not encrypted (and stay readable); new objects are",
                        site.name, e.plain_staged, e.plain_images
                    )?;
                }
            }
            if site.unverified_objects.files > 0 {
                writeln!(
                    out,
                    "{}: {} archive object(s) ({}) not counted as archived (unverified or not lomob's); billed until deleted (`lomob cost` shows what they cost)",
                    site.name,
                    site.unverified_objects.files,
                    ByteSize(site.unverified_objects.bytes)
                )?;
            }
        }
    }
    Ok(exit::SUCCESS)
}

fn sites(
    ctx: &Context,
    m: &crate::manifest::Manifest,
    totals: &crate::manifest::Totals,
) -> anyhow::Result<Vec<SiteStatus>> {
    let isos = m.isos()?;
    let mut out = Vec::new();
    for name in ctx.config.config.sites.keys() {
        let mut st = SiteStatus {
            name: name.clone(),
            ..Default::default()
        };
        let t = totals.site(name);
        st.archived = t.archived.into();
        st.staged = t.staged_unarchived().into();
        st.waiting_to_free = t.staged_archived.into();
        st.not_yet_safe = totals.not_yet_safe(name).into();
        let encrypted = ctx.config.config.sites[name].encryption.as_ref();
        let mut plain_staged = 0;
        if encrypted.is_some() {
            for (_, c, r) in m.staged(Some(name))? {
                // A keyed name never equals the plain one: this copy went up unencrypted.
                if r.key == crate::keys::stage_key(&c) {
                    plain_staged += 1;
                }
            }
        }
        for (_, o) in m.unverified(Some(name))? {
            st.unverified_objects.files += 1;
            st.unverified_objects.bytes += o.size;
        }
        st.interrupted_images = m.pending_images(name)?.len() as u64;
        for part in ["stage", "archive"] {
            if let Some(c) = m.check_record(name, part)? {
                st.checks.push(LastCheck::of(c));
            }
        }
        st.thaws_pending = m
            .thaws()?
            .into_iter()
            .filter(|(site, _)| site == name)
            .map(|(_, t)| PendingThaw {
                key: t.key,
                tier: t.tier,
                ready_by: output::rfc3339(t.ready_by),
            })
            .collect();
        st.images = isos
            .iter()
            .filter(|i| i.uploads.iter().any(|u| &u.site == name))
            .count() as u64;
        if let Some(e) = encrypted {
            let plain_images = isos
                .iter()
                .flat_map(|i| &i.uploads)
                .filter(|u| &u.site == name && !crate::keys::is_sealed_image_key(name, &u.key))
                .count() as u64;
            st.encryption = Some(EncryptionStatus {
                recipients: e.recipients.len(),
                key_verified: m
                    .mark(&super::key_cmd::verified_mark(name))?
                    .map(output::rfc3339),
                plain_staged,
                plain_images,
            });
        }
        let command = format!("sync:{name}");
        for kv in m.runs() {
            let (_, r) = kv?;
            if r.command == command {
                st.last_sync = Some(LastRun {
                    started: output::rfc3339(r.started),
                    ended: output::rfc3339(r.ended),
                    ok: r.ok,
                    counts: r.counts,
                });
                break;
            }
        }
        out.push(st);
    }
    Ok(out)
}

//! `lomob restore`: files back from the cheapest readable copy, into a folder, proven.
//!
//! The steps: [`select`] the files and versions; check where each goes ([`dest`]: never
//! outside the folder, an identical file is skipped, a different one left alone); [`plan`]
//! where each content comes from (a staged copy, a hot image, then a cold one, and for
//! images only the wanted byte ranges); [`fetch`] the bytes, every file hashed and checked
//! before it gets its real name. Cold images go through the thaw workflow ([`thaw`]): one
//! RestoreObject per image, recorded in the manifest so a rerun never asks twice, and with
//! `--wait` each image is read as soon as it is thawed while the others still thaw.
//! [`recover`] rebuilds a manifest on a machine that has nothing but the profile.

pub mod dest;
pub mod fetch;
pub mod plan;
pub mod recover;
pub mod select;
pub mod thaw;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lomob_backends::{ErrorKind, ThawTier};
use serde::Serialize;

use crate::archive::{ThawRequest, ThawState};
use crate::manifest::{self, ContentId, Manifest, ManifestError, ThawRecord};
use crate::progress::Progress;
use crate::site::Site;
use crate::store::RequestCounts;
use dest::Existing;
use fetch::{Ctx, Tally, Target};
use plan::{Group, ImageJob, SiteView};
pub use select::When;

/// Staged copies downloaded at once.
const STAGED_AT_ONCE: usize = 4;
/// How long past the latest ready-by a `--wait` keeps polling before it gives up.
const GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub to: PathBuf,
    /// Paths or globs (raw bytes); none means every file.
    pub patterns: Vec<Vec<u8>>,
    pub when: When,
    /// Also files deleted locally.
    pub deleted: bool,
    pub dry_run: bool,
    pub overwrite: bool,
    /// Wait for thaws and finish, instead of returning once they are requested.
    pub wait: bool,
    /// The thaw tier; `None`: each site's `thaw-tier`, else bulk.
    pub tier: Option<ThawTier>,
    pub progress: bool,
    /// The command to run again later, shown while thaws are pending.
    pub command: String,
}

/// One file that was not restored, and why.
#[derive(Clone, Debug, Serialize)]
pub struct FileIssue {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    pub message: String,
}

impl FileIssue {
    pub fn new(path: &[u8], kind: Option<ErrorKind>, message: String) -> Self {
        FileIssue {
            path: String::from_utf8_lossy(path).into_owned(),
            kind,
            message,
        }
    }
}

/// Where a file comes from, for `--dry-run`.
#[derive(Clone, Debug, Serialize)]
pub struct FileSource {
    pub path: String,
    pub size: u64,
    pub from: String,
}

/// One image a restore reads.
#[derive(Clone, Debug, Serialize)]
pub struct ImageReport {
    #[serde(flatten)]
    pub job: ImageJob,
    pub files: u64,
    pub gets: u64,
    /// `not-needed`, `frozen` (a thaw would be requested), `requested`, `in-progress`,
    /// `thawed`, `missing`.
    pub thaw: String,
    pub done: bool,
}

/// A thaw a rerun waits for.
#[derive(Clone, Debug, Serialize)]
pub struct Waiting {
    pub site: String,
    pub key: String,
    pub tier: String,
    pub requested: String,
    pub ready_by: String,
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub to: String,
    pub dry_run: bool,
    pub selected: u64,
    pub selected_bytes: u64,
    pub restored: u64,
    pub restored_bytes: u64,
    /// Already in place with the right bytes: not fetched.
    pub already_there: u64,
    pub from_stage: u64,
    pub from_images: u64,
    pub bytes_downloaded: u64,
    /// Different files already in place, left alone (no `--overwrite`).
    pub left_alone: Vec<FileIssue>,
    /// Names refused: they could leave the folder or cannot be a file name.
    pub refused: Vec<FileIssue>,
    /// No copy on any site considered.
    pub missing: Vec<FileIssue>,
    pub failed: Vec<FileIssue>,
    pub warnings: Vec<String>,
    pub unmatched: Vec<String>,
    pub without_version: u64,
    pub deleted_left_out: u64,
    /// `--dry-run` only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSource>,
    pub images: Vec<ImageReport>,
    pub waiting: Vec<Waiting>,
    /// Requests sent, per site.
    pub requests: BTreeMap<String, RequestCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<thaw::Estimate>,
    /// The command that continues this restore once the thaws are done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_later: Option<String>,
}

impl RestoreReport {
    fn absorb(&mut self, t: Tally) {
        self.restored += t.restored;
        self.restored_bytes += t.restored_bytes;
        self.bytes_downloaded += t.downloaded;
        self.failed.extend(t.failed);
        self.warnings.extend(t.warnings);
    }
}

/// What stops a restore as a whole (per-file trouble goes into the report).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RestoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RestoreError::Manifest(_) => ErrorKind::Other,
            RestoreError::Usage(_) => ErrorKind::Config,
            RestoreError::Local { source, .. } => fetch::write_kind(&dest::WriteError::Io {
                path: PathBuf::new(),
                source: std::io::Error::new(source.kind(), ""),
            }),
        }
    }
}

/// Restores the selected files from `sites` into `opts.to`.
pub async fn restore(
    m: Arc<Manifest>,
    sites: Vec<Arc<Site>>,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let mut report = RestoreReport {
        to: opts.to.display().to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let tiers: HashMap<String, ThawTier> = sites
        .iter()
        .map(|s| Ok((s.name.clone(), thaw::tier_for(s, opts.tier)?)))
        .collect::<Result<_, String>>()
        .map_err(RestoreError::Usage)?;
    if !opts.dry_run {
        std::fs::create_dir_all(&opts.to).map_err(|source| RestoreError::Local {
            path: opts.to.clone(),
            source,
        })?;
    }
    let (targets, groups) = tokio::task::block_in_place(|| prepare(&m, opts, &mut report))?;
    let views: Vec<SiteView> = sites
        .iter()
        .map(|s| SiteView {
            name: s.name.clone(),
            cold: s.archive.info().capabilities.needs_thaw,
        })
        .collect();
    let all: Vec<usize> = (0..groups.len()).collect();
    let p = plan::plan(&m, &groups, &all, &views, true)?;
    for &g in &p.missing {
        for &f in &groups[g].files {
            report.missing.push(FileIssue::new(
                &targets[f].wanted.path,
                Some(ErrorKind::NotFound),
                "no copy on any site considered: it was never staged or archived (run a sync), or only on a site left out".into(),
            ));
        }
    }
    let total: u64 = groups
        .iter()
        .enumerate()
        .filter(|(i, _)| !p.missing.contains(i))
        .map(|(_, g)| g.size * g.files.len() as u64)
        .sum();
    let progress = Progress::with_total("restore", opts.progress && !opts.dry_run, total);
    let ctx = Ctx {
        to: &opts.to,
        groups: &groups,
        targets: &targets,
        progress: &progress,
    };
    let src = Sources {
        m: &m,
        sites: sites.iter().map(|s| (s.name.as_str(), s)).collect(),
        views,
        tiers,
    };
    if opts.dry_run {
        dry_run(&src, &ctx, &p, &mut report).await;
    } else {
        execute(&src, &ctx, p, opts, &mut report).await?;
    }
    progress.finish();
    for s in &sites {
        report.requests.insert(s.name.clone(), s.requests());
    }
    tracing::debug!(
        "restore: {} files in {:.1}s",
        report.restored,
        started.elapsed().as_secs_f64()
    );
    Ok(report)
}

/// The manifest and the sites a restore reads from.
struct Sources<'a> {
    m: &'a Manifest,
    sites: HashMap<&'a str, &'a Arc<Site>>,
    views: Vec<SiteView>,
    /// The thaw tier of each site.
    tiers: HashMap<String, ThawTier>,
}

impl Sources<'_> {
    fn site(&self, name: &str) -> &Arc<Site> {
        self.sites[name]
    }
}

/// Empty files, then staged copies (an image where one fails), then hot images, then the
/// thaw workflow for cold ones.
async fn execute(
    src: &Sources<'_>,
    ctx: &Ctx<'_>,
    mut p: plan::Plan,
    opts: &RestoreOptions,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    for &g in &p.empty {
        let t = tokio::task::block_in_place(|| ctx.empty(g));
        report.absorb(t);
    }
    let retry = from_stage(ctx, &p, src, report).await;
    if !retry.is_empty() {
        let which: Vec<usize> = retry.iter().map(|(g, _)| *g).collect();
        let again = plan::plan(src.m, ctx.groups, &which, &src.views, false)?;
        for (g, e) in &retry {
            if !again.missing.contains(g) {
                continue;
            }
            for &f in &ctx.groups[*g].files {
                report.failed.push(FileIssue::new(
                    &ctx.targets[f].wanted.path,
                    Some(e.kind()),
                    format!("{e}; no image holds it yet, so nothing was written"),
                ));
            }
        }
        p.images.extend(again.images);
    }
    let (hot, mut cold): (Vec<ImageJob>, Vec<ImageJob>) = p.images.drain(..).partition(|j| !j.cold);
    for job in hot {
        let site = src.site(&job.site);
        // An image a lifecycle rule moved to a cold class goes through the thaw workflow.
        if read_image(ctx, site, job.clone(), "not-needed", report).await == Read::Refrozen {
            cold.push(job);
        }
    }
    thaw_and_read(src, ctx, cold, opts, report).await
}

/// Selects the files, decides where each goes and whether it is already there, and groups
/// them by content (each content is fetched once, whatever the paths holding it).
fn prepare(
    m: &Manifest,
    opts: &RestoreOptions,
    report: &mut RestoreReport,
) -> Result<(Vec<Target>, Vec<Group>), RestoreError> {
    let sel = select::select(m, &opts.patterns, opts.when, opts.deleted)?;
    report.unmatched = sel.unmatched;
    report.without_version = sel.without_version;
    report.deleted_left_out = sel.deleted_left_out;
    let mut targets = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: HashMap<ContentId, usize> = HashMap::new();
    for w in sel.files {
        report.selected += 1;
        report.selected_bytes += w.size;
        let dest = match dest::place(&opts.to, &w.path) {
            Ok(d) => d,
            Err(why) => {
                report.refused.push(FileIssue::new(
                    &w.path,
                    None,
                    format!("refused: the name holds {why}; nothing was written for it"),
                ));
                continue;
            }
        };
        match dest::existing(&dest, w.size, &w.sha256) {
            Ok(Existing::Identical) => {
                report.already_there += 1;
                continue;
            }
            Ok(Existing::Different(why)) if !opts.overwrite => {
                report.left_alone.push(FileIssue::new(
                    &w.path,
                    None,
                    format!(
                        "{} holds something else ({why}): left alone; --overwrite replaces it",
                        dest.display()
                    ),
                ));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                report.failed.push(FileIssue::new(
                    &w.path,
                    Some(ErrorKind::Other),
                    format!("cannot look at {}: {e}", dest.display()),
                ));
                continue;
            }
        }
        let g = *group_of.entry(w.content).or_insert_with(|| {
            groups.push(Group {
                content: w.content,
                size: w.size,
                sha256: w.sha256,
                files: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].files.push(targets.len());
        targets.push(Target { wanted: w, dest });
    }
    Ok((targets, groups))
}

/// Downloads the staged copies; returns the groups whose staged copy failed, to be read
/// from an image instead, with why.
async fn from_stage(
    ctx: &Ctx<'_>,
    p: &plan::Plan,
    src: &Sources<'_>,
    report: &mut RestoreReport,
) -> Vec<(usize, crate::store::StoreError)> {
    let results: Vec<_> = futures::stream::iter(p.staged.iter().map(|(g, site, key)| {
        let site = src.site(site);
        async move { (*g, ctx.from_stage(site, *g, key).await) }
    }))
    .buffer_unordered(STAGED_AT_ONCE)
    .collect()
    .await;
    let mut retry = Vec::new();
    for (g, r) in results {
        match r {
            Ok(t) => {
                report.from_stage += t.restored;
                report.absorb(t);
            }
            Err(e) => {
                report
                    .warnings
                    .push(format!("{e}; an image is used instead where one holds it"));
                retry.push((g, e));
            }
        }
    }
    retry
}

/// How reading one image ended.
#[derive(PartialEq)]
enum Read {
    Done,
    Failed,
    /// Every file that failed did so because the image is frozen again: its thawed copy
    /// expired between the look and the read. Those files are left for a new thaw.
    Refrozen,
}

async fn read_image(
    ctx: &Ctx<'_>,
    site: &Arc<Site>,
    job: ImageJob,
    thaw: &str,
    report: &mut RestoreReport,
) -> Read {
    let mut t = ctx.from_image(site, &job).await;
    let refrozen =
        !t.failed.is_empty() && t.failed.iter().all(|f| f.kind == Some(ErrorKind::Frozen));
    let outcome = if t.failed.is_empty() {
        Read::Done
    } else if refrozen {
        t.failed.clear();
        report.warnings.push(format!(
            "site {}: {} could not be read, it is frozen (its thawed copy expired, or a lifecycle rule moved it to a cold class); a thaw is asked for",
            site.name, job.name
        ));
        Read::Refrozen
    } else {
        Read::Failed
    };
    report.from_images += t.restored;
    report.absorb(t);
    if outcome != Read::Refrozen {
        report.images.push(ImageReport {
            files: job.members.len() as u64,
            gets: job.gets() + 1,
            thaw: thaw.into(),
            done: outcome == Read::Done,
            job,
        });
    }
    outcome
}

/// Fails every file of an image's members.
fn fail_job(
    ctx: &Ctx<'_>,
    job: &ImageJob,
    kind: ErrorKind,
    message: &str,
    report: &mut RestoreReport,
) {
    for mb in &job.members {
        for &f in &ctx.groups[mb.group].files {
            report.failed.push(FileIssue::new(
                &ctx.targets[f].wanted.path,
                Some(kind),
                message.to_string(),
            ));
        }
    }
}

/// What HEAD says of a cold image.
enum Cold {
    Readable(&'static str),
    Thawing,
    Frozen,
    Failed(ErrorKind, String),
}

async fn look(site: &Site, job: &ImageJob) -> Cold {
    match site.archive.stat(&job.key).await {
        Ok(None) => Cold::Failed(
            ErrorKind::NotFound,
            format!(
                "image {} is not on the archive of site {} ({}): run `lomob check` on the site",
                job.name, site.name, job.key
            ),
        ),
        Ok(Some(o)) => match o.thaw {
            ThawState::NotNeeded => Cold::Readable("not-needed"),
            ThawState::Thawed { .. } => Cold::Readable("thawed"),
            ThawState::InProgress => Cold::Thawing,
            ThawState::Frozen => Cold::Frozen,
        },
        Err(e) => Cold::Failed(e.kind(), e.to_string()),
    }
}

async fn dry_run(src: &Sources<'_>, ctx: &Ctx<'_>, p: &plan::Plan, report: &mut RestoreReport) {
    let mut est = thaw::Estimate::default();
    let source = |g: usize, from: String, report: &mut RestoreReport| {
        for &f in &ctx.groups[g].files {
            let w = &ctx.targets[f].wanted;
            report.files.push(FileSource {
                path: String::from_utf8_lossy(&w.path).into_owned(),
                size: w.size,
                from: from.clone(),
            });
        }
    };
    for &g in &p.empty {
        source(g, "empty: nothing to fetch".into(), report);
    }
    for (g, site, key) in &p.staged {
        source(*g, format!("stage of site {site} ({key})"), report);
        est.add_egress(&src.site(site).config.stage, ctx.groups[*g].size);
        est.get_requests += 1;
    }
    for job in &p.images {
        let site = src.site(&job.site);
        let thaw = if job.cold {
            match look(site, job).await {
                Cold::Readable(s) => s.to_string(),
                Cold::Thawing => "in-progress".into(),
                Cold::Frozen => match src.m.thaw(&site.name, &job.key) {
                    Ok(Some(_)) => "frozen (the thaw asked for earlier has expired)".into(),
                    _ => "frozen".into(),
                },
                Cold::Failed(_, e) => format!("missing ({e})"),
            }
        } else {
            "not-needed".into()
        };
        est.add_image(site, job, thaw.starts_with("frozen"), src.tiers[&site.name]);
        for mb in &job.members {
            source(
                mb.group,
                format!(
                    "image {} on site {} at byte {}{}",
                    job.name,
                    site.name,
                    mb.offset,
                    if thaw.starts_with("frozen") {
                        " (needs a thaw)"
                    } else {
                        ""
                    }
                ),
                report,
            );
        }
        report.images.push(ImageReport {
            files: job.members.len() as u64,
            gets: job.gets() + 1,
            thaw,
            done: false,
            job: job.clone(),
        });
    }
    report.estimate = Some(est);
}

/// The thaw workflow for the cold images: each is looked at once (HEAD); readable ones are
/// read at once, frozen ones get one RestoreObject (recorded), and with `--wait` the
/// thawing ones are polled with backoff and read as each becomes ready.
async fn thaw_and_read(
    src: &Sources<'_>,
    ctx: &Ctx<'_>,
    cold: Vec<ImageJob>,
    opts: &RestoreOptions,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    let (m, tiers) = (src.m, &src.tiers);
    if cold.is_empty() {
        return Ok(());
    }
    let cold_bytes: HashMap<String, u64> = cold.iter().fold(HashMap::new(), |mut acc, j| {
        *acc.entry(j.site.clone()).or_default() += j.download_bytes;
        acc
    });
    let mut pending: Vec<(ImageJob, ThawRecord)> = Vec::new();
    for job in cold {
        let site = src.site(&job.site);
        match look(site, &job).await {
            Cold::Readable(state) => {
                let (tier, bytes) = (tiers[&site.name], cold_bytes[&site.name]);
                let again = read_or_thaw_again(m, ctx, site, job, state, tier, bytes, report);
                pending.extend(again.await?);
            }
            Cold::Failed(kind, message) => fail_job(ctx, &job, kind, &message, report),
            Cold::Thawing => {
                // Asked for by an earlier run (or by someone else): never asked again.
                let rec = match m.thaw(&site.name, &job.key)? {
                    Some(r) => r,
                    None => {
                        let r = new_record(site, &job, tiers[&site.name], cold_bytes[&site.name]);
                        m.put_thaw(&site.name, &r)?;
                        r
                    }
                };
                pending.push((job, rec));
            }
            Cold::Frozen => {
                let rec = new_record(site, &job, tiers[&site.name], cold_bytes[&site.name]);
                if let Some(p) = ask_thaw(m, ctx, site, job, rec, report).await? {
                    pending.push(p);
                }
            }
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    if opts.wait {
        wait_for(src, ctx, &mut pending, report).await?;
    }
    if !pending.is_empty() {
        report.run_later = Some(opts.command.clone());
        for (job, rec) in &pending {
            report.images.push(ImageReport {
                files: job.members.len() as u64,
                gets: job.gets() + 1,
                thaw: "in-progress".into(),
                done: false,
                job: job.clone(),
            });
            report.waiting.push(Waiting {
                site: job.site.clone(),
                key: job.key.clone(),
                tier: rec.tier.clone(),
                requested: manifest::rfc3339(rec.requested),
                ready_by: manifest::rfc3339(rec.ready_by),
            });
        }
    }
    Ok(())
}

/// Reads a thawed (or hot) image; when it turns out frozen again, its old thaw record goes
/// and a new thaw is asked for (`tier`, sized for `bytes`): `Some` while that one thaws.
#[allow(clippy::too_many_arguments)]
async fn read_or_thaw_again(
    m: &Manifest,
    ctx: &Ctx<'_>,
    site: &Arc<Site>,
    job: ImageJob,
    state: &str,
    tier: ThawTier,
    bytes: u64,
    report: &mut RestoreReport,
) -> Result<Option<(ImageJob, ThawRecord)>, RestoreError> {
    match read_image(ctx, site, job.clone(), state, report).await {
        Read::Done => m.remove_thaw(&site.name, &job.key)?,
        Read::Failed => {}
        Read::Refrozen => {
            m.remove_thaw(&site.name, &job.key)?;
            let rec = new_record(site, &job, tier, bytes);
            return ask_thaw(m, ctx, site, job, rec, report).await;
        }
    }
    Ok(None)
}

/// Sends the one RestoreObject of a frozen image and records it; `Some` while it thaws.
async fn ask_thaw(
    m: &Manifest,
    ctx: &Ctx<'_>,
    site: &Arc<Site>,
    job: ImageJob,
    rec: ThawRecord,
    report: &mut RestoreReport,
) -> Result<Option<(ImageJob, ThawRecord)>, RestoreError> {
    if let Some(old) = m.thaw(&site.name, &job.key)? {
        report.warnings.push(format!(
            "site {}: the thaw of {} asked for at {} has expired; asking again",
            site.name,
            job.name,
            manifest::rfc3339(old.requested)
        ));
    }
    let tier = thaw::parse_tier(&rec.tier).unwrap_or(ThawTier::Bulk);
    match site.archive.request_thaw(&job.key, rec.days, tier).await {
        Ok(ThawRequest::NotNeeded | ThawRequest::AlreadyThawed) => {
            // Said to be thawed, yet frozen when read: not asked again in this run (that
            // could go on for ever); the rerun looks again.
            if read_image(ctx, site, job.clone(), "thawed", report).await == Read::Refrozen {
                fail_job(
                    ctx,
                    &job,
                    ErrorKind::Frozen,
                    &format!(
                        "image {} was said to be thawed but could not be read: run the restore again later",
                        job.name
                    ),
                    report,
                );
            }
            Ok(None)
        }
        Ok(ThawRequest::Started | ThawRequest::AlreadyInProgress) => {
            m.put_thaw(&site.name, &rec)?;
            m.flush()?;
            tracing::info!(
                "site {}: thaw of {} requested ({} tier, {} days)",
                site.name,
                job.name,
                rec.tier,
                rec.days
            );
            Ok(Some((job, rec)))
        }
        Err(e) => {
            fail_job(ctx, &job, e.kind(), &e.to_string(), report);
            Ok(None)
        }
    }
}

fn new_record(site: &Site, job: &ImageJob, tier: ThawTier, site_bytes: u64) -> ThawRecord {
    let wait = thaw::ready_within(thaw::class_of(site), tier);
    let now = manifest::now();
    ThawRecord {
        key: job.key.clone(),
        tier: thaw::tier_name(tier).into(),
        days: thaw::days_for(site, wait, site_bytes),
        requested: now,
        ready_by: now + wait.as_secs() as i64,
    }
}

/// Polls the thawing images, at most one HEAD per image per poll, with backoff, reading
/// each as soon as it is thawed. Gives up a day after the latest stated ready-by.
async fn wait_for(
    src: &Sources<'_>,
    ctx: &Ctx<'_>,
    pending: &mut Vec<(ImageJob, ThawRecord)>,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    let m = src.m;
    let base = thaw::poll_interval();
    let mut interval = base;
    let total = pending.len();
    let deadline =
        pending.iter().map(|(_, r)| r.ready_by).max().unwrap_or(0) + GRACE.as_secs() as i64;
    while !pending.is_empty() {
        if manifest::now() > deadline {
            report.warnings.push(format!(
                "{} image(s) still thawing a day after the provider's stated time; run the restore again later",
                pending.len()
            ));
            return Ok(());
        }
        crate::progress::suspend(|| {
            tracing::info!(
                "restore: {} of {total} images thawed; next look in {}s",
                total - pending.len(),
                interval.as_secs()
            )
        });
        tokio::time::sleep(interval).await;
        interval = (interval.mul_f64(1.5)).min(base * 4);
        let mut still = Vec::new();
        for (job, rec) in pending.drain(..) {
            let site = src.site(&job.site);
            match look(site, &job).await {
                Cold::Readable(state) => {
                    let tier = thaw::parse_tier(&rec.tier).unwrap_or(ThawTier::Bulk);
                    let bytes = job.download_bytes;
                    let again = read_or_thaw_again(m, ctx, site, job, state, tier, bytes, report);
                    still.extend(again.await?);
                }
                Cold::Thawing => still.push((job, rec)),
                Cold::Frozen => fail_job(
                    ctx,
                    &job,
                    ErrorKind::Frozen,
                    &format!(
                        "image {} is frozen again: its thaw ended before it was read; run the restore again",
                        job.name
                    ),
                    report,
                ),
                Cold::Failed(ErrorKind::Transient, message) => {
                    report.warnings.push(message);
                    still.push((job, rec));
                }
                Cold::Failed(kind, message) => fail_job(ctx, &job, kind, &message, report),
            }
        }
        *pending = still;
    }
    Ok(())
}

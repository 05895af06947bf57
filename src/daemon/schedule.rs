//! When each job of each site runs: its schedule, a fixed per-job offset (jitter), catch-up
//! after the machine was off or asleep, and retries after a failure.
//!
//! One rule covers the normal case and catch-up: a job is due when the latest time its
//! schedule names (plus its offset) is later than the last one handled, which is kept in the
//! manifest. However many runs were missed while the machine was off, that is one run; a
//! clock that goes back makes nothing due until it passes the handled time again. Pure
//! functions of the time given, so tests drive them with any clock.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;

use crate::config::{Schedule, ScheduleConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Sync,
    CheckStage,
    CheckArchive,
    CheckLocal,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::Sync,
        JobKind::CheckStage,
        JobKind::CheckArchive,
        JobKind::CheckLocal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobKind::Sync => "sync",
            JobKind::CheckStage => "check-stage",
            JobKind::CheckArchive => "check-archive",
            JobKind::CheckLocal => "check-local",
        }
    }

    pub fn schedule(self, s: &ScheduleConfig) -> Schedule {
        match self {
            JobKind::Sync => s.sync,
            JobKind::CheckStage => s.check_stage,
            JobKind::CheckArchive => s.check_archive,
            JobKind::CheckLocal => s.check_local,
        }
    }

    /// The lomob command this job is.
    pub fn argv(self, site: &str) -> Vec<String> {
        let mut v: Vec<String> = match self {
            JobKind::Sync => vec!["sync".into(), "--site".into(), site.into()],
            JobKind::CheckStage => vec![
                "check".into(),
                "--site".into(),
                site.into(),
                "--stage".into(),
            ],
            JobKind::CheckArchive => {
                vec![
                    "check".into(),
                    "--site".into(),
                    site.into(),
                    "--archive".into(),
                ]
            }
            JobKind::CheckLocal => vec!["check".into(), "--local".into()],
        };
        v.splice(0..0, ["lomob".to_string(), "--held-alerts".to_string()]);
        v
    }

    /// The manifest mark that remembers the last scheduled time handled.
    pub fn mark_key(self, site: &str) -> String {
        format!("daemon/{site}/{}", self.name())
    }
}

/// A fixed offset in `[0, jitter)` for one site's job, so sites due at the same time start
/// apart, the same way on every start.
pub fn offset(site: &str, kind: JobKind, jitter: Duration) -> i64 {
    let j = jitter.as_secs();
    if j == 0 {
        return 0;
    }
    let h = xxhash_rust::xxh3::xxh3_64(format!("{site}/{}", kind.name()).as_bytes());
    (h % j) as i64
}

/// The latest time at or before `now` (Unix seconds) the job is due, offset included.
pub fn due(schedule: Schedule, now: i64, offset: i64, tz: &TimeZone) -> Option<i64> {
    let shifted = Timestamp::from_second(now - offset).ok()?;
    schedule
        .last_due(shifted, tz)
        .map(|t| t.as_second() + offset)
}

/// The next time after `now` the job will be due (for `daemon status`).
pub fn next(schedule: Schedule, now: i64, offset: i64, tz: &TimeZone) -> Option<i64> {
    // The schedules repeat at most monthly: step forward an hour at a time until the due
    // time moves, then a minute at a time within that hour.
    let current = due(schedule, now, offset, tz);
    let mut t = now;
    for _ in 0..24 * 32 {
        t += 3600;
        let d = due(schedule, t, offset, tz);
        if d != current && d.is_some_and(|d| d > now) {
            // Within the last hour stepped: find the minute.
            let mut lo = t - 3600;
            while lo < t {
                lo += 60;
                let dl = due(schedule, lo, offset, tz);
                if dl != current && dl.is_some_and(|d| d > now) {
                    return dl;
                }
            }
            return d;
        }
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do now.
    Wait,
    /// The daemon has never handled this job: start counting from `due`, run nothing (the
    /// first start of a daemon is not a missed run).
    Start(i64),
    /// Run now for the time `due`. `late`: it was missed (machine off or asleep).
    Run { due: i64, late: bool },
}

/// What to do about one job at `now`, given the last due time handled (`mark`). `tick` is
/// how often the daemon looks: a due time older than a few ticks was missed.
pub fn decide(
    schedule: Schedule,
    mark: Option<i64>,
    now: i64,
    offset: i64,
    tz: &TimeZone,
    tick: Duration,
) -> Decision {
    let Some(d) = due(schedule, now, offset, tz) else {
        return Decision::Wait;
    };
    match mark {
        None => Decision::Start(d),
        Some(m) if m >= d => Decision::Wait,
        Some(_) => Decision::Run {
            due: d,
            late: now - d > (3 * tick.as_secs() as i64).max(60),
        },
    }
}

/// A job that failed and is being retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failing {
    /// When it first failed.
    pub since: i64,
    pub attempts: u32,
    pub retry_at: i64,
    pub last_error: String,
}

/// After a failure at `now`: when to try again, or `None` once `retry_for` has passed since
/// the first failure (then the caller alerts and waits for the next scheduled time). Pauses
/// double from `first`, up to 5 minutes (or `first`, if longer).
pub fn after_failure(
    prev: Option<&Failing>,
    now: i64,
    error: String,
    first: Duration,
    retry_for: Duration,
) -> Option<Failing> {
    let since = prev.map_or(now, |f| f.since);
    let attempts = prev.map_or(0, |f| f.attempts) + 1;
    if now - since >= retry_for.as_secs() as i64 {
        return None;
    }
    let first = first.as_secs().max(1) as i64;
    let pause = first
        .saturating_mul(1i64 << (attempts - 1).min(20))
        .min(300.max(first));
    Some(Failing {
        since,
        attempts,
        retry_at: now + pause,
        last_error: error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }
    const TICK: Duration = Duration::from_secs(1);

    fn daily() -> Schedule {
        "daily 02:00".parse().unwrap()
    }

    #[test]
    fn due_times_follow_the_schedule_plus_a_fixed_offset() {
        let tz = TimeZone::UTC;
        assert_eq!(
            due(daily(), t("2026-03-04T02:00:00Z"), 0, &tz),
            Some(t("2026-03-04T02:00:00Z"))
        );
        assert_eq!(
            due(daily(), t("2026-03-04T02:04:59Z"), 300, &tz),
            Some(t("2026-03-03T02:05:00Z"))
        );
        assert_eq!(
            due(daily(), t("2026-03-04T02:05:00Z"), 300, &tz),
            Some(t("2026-03-04T02:05:00Z"))
        );
        assert_eq!(
            next(daily(), t("2026-03-04T02:05:00Z"), 300, &tz),
            Some(t("2026-03-05T02:05:00Z"))
        );
        assert_eq!(
            next(
                "hourly 30".parse().unwrap(),
                t("2026-03-04T02:05:00Z"),
                0,
                &tz
            ),
            Some(t("2026-03-04T02:30:00Z"))
        );
        assert_eq!(next(Schedule::Off, 0, 0, &tz), None);
    }

    #[test]
    fn jitter_stays_within_its_bound_and_spreads_sites() {
        let j = Duration::from_secs(300);
        let offsets: Vec<i64> = (0..50)
            .map(|i| offset(&format!("site{i}"), JobKind::Sync, j))
            .collect();
        assert!(offsets.iter().all(|o| (0..300).contains(o)));
        let distinct: std::collections::HashSet<_> = offsets.iter().collect();
        assert!(distinct.len() > 25, "{offsets:?}");
        assert_eq!(offset("a", JobKind::Sync, j), offset("a", JobKind::Sync, j));
        assert_eq!(offset("a", JobKind::Sync, Duration::ZERO), 0);
    }

    #[test]
    fn first_start_runs_nothing_then_each_due_time_runs_once() {
        let tz = TimeZone::UTC;
        let now = t("2026-03-04T12:00:00Z");
        let d = decide(daily(), None, now, 0, &tz, TICK);
        assert_eq!(d, Decision::Start(t("2026-03-04T02:00:00Z")));
        let mark = Some(t("2026-03-04T02:00:00Z"));
        assert_eq!(decide(daily(), mark, now, 0, &tz, TICK), Decision::Wait);
        // On time the next night.
        assert_eq!(
            decide(daily(), mark, t("2026-03-05T02:00:00Z"), 0, &tz, TICK),
            Decision::Run {
                due: t("2026-03-05T02:00:00Z"),
                late: false
            }
        );
    }

    #[test]
    fn catch_up_after_a_clock_jump_is_one_run() {
        let tz = TimeZone::UTC;
        let mark = Some(t("2026-03-04T02:00:00Z"));
        // Asleep for three days: three nights missed, one run, late.
        let wake = t("2026-03-07T09:00:00Z");
        let d = decide(daily(), mark, wake, 0, &tz, TICK);
        assert_eq!(
            d,
            Decision::Run {
                due: t("2026-03-07T02:00:00Z"),
                late: true
            }
        );
        // Once handled (mark moved to that due time), nothing more until the next night.
        let mark = Some(t("2026-03-07T02:00:00Z"));
        for later in [wake + 1, wake + 600, t("2026-03-08T01:59:00Z")] {
            assert_eq!(decide(daily(), mark, later, 0, &tz, TICK), Decision::Wait);
        }
        // A clock set back a day makes nothing due twice.
        assert_eq!(
            decide(daily(), mark, t("2026-03-06T03:00:00Z"), 0, &tz, TICK),
            Decision::Wait
        );
    }

    #[test]
    fn failures_retry_with_growing_pauses_then_give_up() {
        let first = Duration::from_secs(30);
        let window = Duration::from_secs(1800);
        let f1 = after_failure(None, 1000, "dns".into(), first, window).unwrap();
        assert_eq!((f1.attempts, f1.retry_at), (1, 1030));
        let f2 = after_failure(Some(&f1), 1030, "dns".into(), first, window).unwrap();
        assert_eq!(f2.retry_at, 1030 + 60);
        let mut f = f2;
        let mut now = 1090;
        while let Some(next) = after_failure(Some(&f), now, "dns".into(), first, window) {
            assert!(next.retry_at - now <= 300);
            now = next.retry_at;
            f = next;
        }
        assert!(
            now - 1000 >= 1800 && now - 1000 < 1800 + 300,
            "gave up at {now}"
        );
    }
}

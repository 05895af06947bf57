//! When a site's jobs run, written the way people say it: `daily 02:30`, `weekly sun 03:00`,
//! `monthly 1 04:00`, `hourly`, or `off`. Parsed when the profile loads so a typo is caught
//! on the first command, not the first night the daemon should have run.

use std::fmt;
use std::str::FromStr;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Off,
    /// `sync` only: stage what the daemon's watcher records, `stage-delay` after it settles.
    OnChange,
    Hourly {
        minute: u8,
    },
    Daily {
        hour: u8,
        minute: u8,
    },
    /// `weekday`: 0 = Monday ... 6 = Sunday.
    Weekly {
        weekday: u8,
        hour: u8,
        minute: u8,
    },
    /// `day`: 1 to 28, so every month has it.
    Monthly {
        day: u8,
        hour: u8,
        minute: u8,
    },
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid schedule {0:?}: write \"off\", \"on-change\" (sync only), \"hourly\", \"daily 02:30\", \"weekly sun 03:00\" or \"monthly 1 04:00\" (day 1 to 28)")]
pub struct ParseScheduleError(String);

fn parse_time(s: &str) -> Option<(u8, u8)> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

impl FromStr for Schedule {
    type Err = ParseScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseScheduleError(s.to_string());
        let words: Vec<String> = s.split_whitespace().map(str::to_ascii_lowercase).collect();
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["off"] | ["never"] => Ok(Schedule::Off),
            ["on-change"] => Ok(Schedule::OnChange),
            ["hourly"] => Ok(Schedule::Hourly { minute: 0 }),
            ["hourly", m] => {
                let minute: u8 = m.trim_start_matches(':').parse().map_err(|_| err())?;
                (minute < 60)
                    .then_some(Schedule::Hourly { minute })
                    .ok_or_else(err)
            }
            ["daily"] => Ok(Schedule::Daily { hour: 2, minute: 0 }),
            ["daily", t] => {
                let (hour, minute) = parse_time(t).ok_or_else(err)?;
                Ok(Schedule::Daily { hour, minute })
            }
            ["weekly", d, t] => {
                let weekday = DAYS.iter().position(|x| d.starts_with(x)).ok_or_else(err)? as u8;
                let (hour, minute) = parse_time(t).ok_or_else(err)?;
                Ok(Schedule::Weekly {
                    weekday,
                    hour,
                    minute,
                })
            }
            ["monthly"] => Ok(Schedule::Monthly {
                day: 1,
                hour: 4,
                minute: 0,
            }),
            ["monthly", d, t] => {
                let day: u8 = d.parse().map_err(|_| err())?;
                let (hour, minute) = parse_time(t).ok_or_else(err)?;
                (1..=28)
                    .contains(&day)
                    .then_some(Schedule::Monthly { day, hour, minute })
                    .ok_or_else(err)
            }
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Schedule::Off => write!(f, "off"),
            Schedule::OnChange => write!(f, "on-change"),
            Schedule::Hourly { minute } => write!(f, "hourly {minute:02}"),
            Schedule::Daily { hour, minute } => write!(f, "daily {hour:02}:{minute:02}"),
            Schedule::Weekly {
                weekday,
                hour,
                minute,
            } => write!(f, "weekly {} {hour:02}:{minute:02}", DAYS[weekday as usize]),
            Schedule::Monthly { day, hour, minute } => {
                write!(f, "monthly {day} {hour:02}:{minute:02}")
            }
        }
    }
}

impl Schedule {
    /// The latest time at or before `t` this schedule names, in time zone `tz`; `None` for
    /// `off` and `on-change`. A time a daylight-saving jump skips counts as the moment after
    /// the jump, so a run is never lost to it.
    pub fn last_due(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let z = t.to_zoned(tz.clone());
        let d = z.date();
        let at = |date: Date, h: u8, m: u8| -> Option<Timestamp> {
            date.at(h as i8, m as i8, 0, 0)
                .to_zoned(tz.clone())
                .ok()
                .map(|z| z.timestamp())
        };
        let back = |c: Option<Timestamp>, earlier: &dyn Fn() -> Option<Timestamp>| match c {
            Some(c) if c <= t => Some(c),
            _ => earlier(),
        };
        match *self {
            Schedule::Off | Schedule::OnChange => None,
            Schedule::Hourly { minute } => {
                let c = at(d, z.hour() as u8, minute)?;
                Some(if c <= t {
                    c
                } else {
                    c.checked_sub(jiff::SignedDuration::from_hours(1)).ok()?
                })
            }
            Schedule::Daily { hour, minute } => back(at(d, hour, minute), &|| {
                at(d.yesterday().ok()?, hour, minute)
            }),
            Schedule::Weekly {
                weekday,
                hour,
                minute,
            } => {
                let offset = (d.weekday().to_monday_zero_offset() as i64 + 7 - weekday as i64) % 7;
                let d0 = d.checked_sub(jiff::Span::new().days(offset)).ok()?;
                back(at(d0, hour, minute), &|| {
                    at(
                        d0.checked_sub(jiff::Span::new().days(7)).ok()?,
                        hour,
                        minute,
                    )
                })
            }
            Schedule::Monthly { day, hour, minute } => {
                let d0 = Date::new(d.year(), d.month(), day as i8).ok()?;
                back(at(d0, hour, minute), &|| {
                    let prev = d.first_of_month().yesterday().ok()?;
                    at(
                        Date::new(prev.year(), prev.month(), day as i8).ok()?,
                        hour,
                        minute,
                    )
                })
            }
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "off",
            "hourly 15",
            "daily 02:30",
            "weekly sun 03:00",
            "monthly 1 04:00",
        ] {
            assert_eq!(s.parse::<Schedule>().unwrap().to_string(), s);
        }
        assert_eq!(
            "Daily".parse::<Schedule>().unwrap(),
            Schedule::Daily { hour: 2, minute: 0 }
        );
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn due(sched: &str, now: &str) -> String {
        sched
            .parse::<Schedule>()
            .unwrap()
            .last_due(ts(now), &TimeZone::UTC)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn last_due_is_the_latest_named_time_not_after_now() {
        assert_eq!(
            due("hourly 15", "2026-03-04T10:20:00Z"),
            "2026-03-04T10:15:00Z"
        );
        assert_eq!(
            due("hourly 15", "2026-03-04T10:10:00Z"),
            "2026-03-04T09:15:00Z"
        );
        assert_eq!(
            due("daily 02:30", "2026-03-04T02:30:00Z"),
            "2026-03-04T02:30:00Z"
        );
        assert_eq!(
            due("daily 02:30", "2026-03-04T02:29:59Z"),
            "2026-03-03T02:30:00Z"
        );
        assert_eq!(
            due("daily 02:30", "2026-03-01T00:00:00Z"),
            "2026-02-28T02:30:00Z"
        );
        // 2026-03-04 is a Wednesday.
        assert_eq!(
            due("weekly sun 03:00", "2026-03-04T12:00:00Z"),
            "2026-03-01T03:00:00Z"
        );
        assert_eq!(
            due("weekly wed 13:00", "2026-03-04T12:00:00Z"),
            "2026-02-25T13:00:00Z"
        );
        assert_eq!(
            due("weekly wed 11:00", "2026-03-04T12:00:00Z"),
            "2026-03-04T11:00:00Z"
        );
        assert_eq!(
            due("monthly 1 04:00", "2026-03-04T12:00:00Z"),
            "2026-03-01T04:00:00Z"
        );
        assert_eq!(
            due("monthly 5 04:00", "2026-03-04T12:00:00Z"),
            "2026-02-05T04:00:00Z"
        );
        assert_eq!(
            due("monthly 5 04:00", "2026-01-04T12:00:00Z"),
            "2025-12-05T04:00:00Z"
        );
        assert_eq!(due("off", "2026-01-04T12:00:00Z"), "");
        assert_eq!(due("on-change", "2026-01-04T12:00:00Z"), "");
    }

    #[test]
    fn a_time_skipped_by_daylight_saving_still_runs() {
        // Europe/Berlin skips 02:00-03:00 on 2026-03-29.
        let Ok(tz) = TimeZone::get("Europe/Berlin") else {
            eprintln!("no time zone database here (tzdata); skipped");
            return;
        };
        let d = "daily 02:30"
            .parse::<Schedule>()
            .unwrap()
            .last_due(ts("2026-03-29T02:00:00Z"), &tz)
            .unwrap();
        assert_eq!(d.to_string(), "2026-03-29T01:30:00Z");
    }

    #[test]
    fn rejects_nonsense() {
        for s in [
            "daily 25:00",
            "monthly 31 01:00",
            "weekly funday 01:00",
            "sometimes",
        ] {
            let e = s.parse::<Schedule>().unwrap_err().to_string();
            assert!(e.contains(s), "{e}");
        }
    }
}

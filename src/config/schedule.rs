//! When a site's jobs run, written the way people say it: `daily 02:30`, `weekly sun 03:00`,
//! `monthly 1 04:00`, `hourly`, or `off`. Parsed when the profile loads so a typo is caught
//! on the first command, not the first night the daemon should have run.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Off,
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
#[error("invalid schedule {0:?}: write \"off\", \"hourly\", \"daily 02:30\", \"weekly sun 03:00\" or \"monthly 1 04:00\" (day 1 to 28)")]
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

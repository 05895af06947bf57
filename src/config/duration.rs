//! Lengths of time in the profile, written the way people say them: `500ms`, `30s`, `5m`,
//! `1h`, `7d`. A bare number is an error rather than a guess at the unit.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period(pub Duration);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {0:?}: write a number and a unit, such as \"500ms\", \"30s\", \"5m\", \"1h\" or \"7d\"")]
pub struct ParsePeriodError(String);

impl Period {
    pub const fn secs(s: u64) -> Period {
        Period(Duration::from_secs(s))
    }
}

impl FromStr for Period {
    type Err = ParsePeriodError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePeriodError(s.to_string());
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| err())?;
        let ms = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        n.checked_mul(ms)
            .map(|ms| Period(Duration::from_millis(ms)))
            .ok_or_else(err)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bare_numbers() {
        for s in ["500ms", "30s", "5m", "1h", "7d", "90s"] {
            assert_eq!(s.parse::<Period>().unwrap().to_string(), s);
        }
        assert_eq!("2 m".parse::<Period>().unwrap(), Period::secs(120));
        for bad in ["30", "", "s", "5 weeks", "-1s", "99999999999999999999d"] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }
}

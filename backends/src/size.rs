//! Byte sizes as people write them in profiles and on the command line.
//!
//! Cloud price sheets count in decimal units, so `KB`, `MB`, `GB` and `TB` are powers of 1000;
//! `KiB`, `MiB`, `GiB` and `TiB` are powers of 1024. A bare number is bytes. The same type is
//! used by the engine (thresholds, image size) and by the backends (quotas, one-shot limits),
//! which is why it lives in this leaf crate.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes, parsed from `5GB`, `512 MiB`, `1.5TB` or `1048576`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Why a size could not be parsed; the message says what is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size {input:?}: {reason}; write a number with an optional unit such as 500KB, 50MB, 5GB, 1TB (powers of 1000) or 512MiB, 4GiB (powers of 1024)")]
pub struct ParseSizeError {
    input: String,
    reason: &'static str,
}

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("k", 1_000),
    ("m", 1_000_000),
    ("g", 1_000_000_000),
    ("t", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }

    pub const fn mb(n: u64) -> Self {
        ByteSize(n * 1_000_000)
    }

    pub const fn gb(n: u64) -> Self {
        ByteSize(n * 1_000_000_000)
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }
}

impl FromStr for ByteSize {
    type Err = ParseSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseSizeError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: String = num.chars().filter(|&c| c != '_').collect();
        let unit = unit.trim().to_ascii_lowercase();
        let mult = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|&(_, m)| m)
                .ok_or_else(|| err("unknown unit"))?
        };
        if num.is_empty() {
            return Err(err("there is no number"));
        }
        if let Ok(n) = num.parse::<u64>() {
            return n
                .checked_mul(mult)
                .map(ByteSize)
                .ok_or_else(|| err("it is too large"));
        }
        let f: f64 = num.parse().map_err(|_| err("the number is malformed"))?;
        let v = f * mult as f64;
        if !(0.0..1.8e19).contains(&v) {
            return Err(err("it is too large"));
        }
        Ok(ByteSize(v.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    /// Decimal units with up to one decimal, like a price sheet: `4.7 GB`, `512 B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        const STEPS: &[(u64, &str)] = &[
            (1_000_000_000_000, "TB"),
            (1_000_000_000, "GB"),
            (1_000_000, "MB"),
            (1_000, "KB"),
        ];
        for &(m, unit) in STEPS {
            if n >= m {
                let v = n as f64 / m as f64;
                return if n.is_multiple_of(m) && n / m >= 10 {
                    write!(f, "{} {unit}", n / m)
                } else {
                    write!(f, "{v:.1} {unit}")
                };
            }
        }
        write!(f, "{n} B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string().replace(' ', ""))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"5GB\", \"512MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| {
                    E::custom(format!(
                        "{v} is negative: write a size such as \"10GB\" or \"512MiB\""
                    ))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_binary_units() {
        assert_eq!("50MB".parse(), Ok(ByteSize(50_000_000)));
        assert_eq!("50 mb".parse(), Ok(ByteSize(50_000_000)));
        assert_eq!("5GB".parse(), Ok(ByteSize(5_000_000_000)));
        assert_eq!("1KiB".parse(), Ok(ByteSize(1024)));
        assert_eq!("512MiB".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("1.5GB".parse(), Ok(ByteSize(1_500_000_000)));
        assert_eq!("1048576".parse(), Ok(ByteSize(1_048_576)));
        assert_eq!("10_000".parse(), Ok(ByteSize(10_000)));
    }

    #[test]
    fn rejects_garbage_with_a_helpful_message() {
        let e = "5 parsecs".parse::<ByteSize>().unwrap_err().to_string();
        assert!(e.contains("\"5 parsecs\""), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
        assert!("".parse::<ByteSize>().is_err());
        assert!("GB".parse::<ByteSize>().is_err());
        assert!("99999999999TB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn a_negative_size_says_what_to_write() {
        let e = serde_json::from_str::<ByteSize>("-5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("-5 is negative") && e.contains("10GB"), "{e}");
    }

    #[test]
    fn displays_in_decimal_units() {
        assert_eq!(ByteSize(512).to_string(), "512 B");
        assert_eq!(ByteSize(5_000_000_000).to_string(), "5.0 GB");
        assert_eq!(ByteSize(50_000_000).to_string(), "50 MB");
        assert_eq!(ByteSize(4_700_000_000).to_string(), "4.7 GB");
        assert_eq!(ByteSize(1_500).to_string(), "1.5 KB");
    }

    #[test]
    fn display_round_trips_through_serde() {
        let s = serde_json::to_string(&ByteSize(5_000_000_000)).unwrap();
        assert_eq!(s, "\"5.0GB\"");
        let back: ByteSize = serde_json::from_str(&s).unwrap();
        assert_eq!(back, ByteSize(5_000_000_000));
    }
}

//! Credentials in profiles, kept out of logs, error text and the manifest.
//!
//! A profile names where a secret lives (`{ env = "B2_KEY" }` or `{ file = "~/.config/k" }`)
//! rather than holding it; an inline string is accepted for quick tests but is printed as
//! `***` everywhere. The value is read only when an operator is built, so `lomob site list`
//! works without the secrets being present.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a credential comes from. Never `Debug`-prints or serializes the value itself.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The name of an environment variable holding the value.
    Env { env: String },
    /// A file whose contents (trailing newline removed) are the value. `~/` is expanded.
    File { file: PathBuf },
    /// The value itself, written in the profile. Discouraged: a profile is often shared.
    Inline(String),
}

/// The forms a secret is written in, for error messages.
const FORMS: &str =
    "write a secret as \"the value\", { env = \"VARIABLE\" } or { file = \"~/path/to/file\" }";

/// Deserialized by hand rather than as an untagged enum: serde's "data did not match any
/// variant of untagged enum Secret" says neither what is accepted nor what to do, and the
/// usual "invalid type: found integer 1234" would print a mistyped secret.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(FORMS)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::Inline(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let mut out = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: Option<String> = map.next_value().ok();
                    let secret = match (key.as_str(), value) {
                        ("env", Some(env)) => Secret::Env { env },
                        ("file", Some(file)) => Secret::File { file: file.into() },
                        ("env" | "file", None) => {
                            return Err(de::Error::custom(format!(
                                "a secret's `{key}` must be a string: {FORMS}"
                            )))
                        }
                        _ => {
                            return Err(de::Error::custom(format!(
                                "a secret has no key `{key}`: {FORMS}"
                            )))
                        }
                    };
                    if out.replace(secret).is_some() {
                        return Err(de::Error::custom(format!(
                            "a secret takes one of `env` and `file`, not both: {FORMS}"
                        )));
                    }
                }
                out.ok_or_else(|| de::Error::custom(format!("a secret is empty: {FORMS}")))
            }
            // Any other type: say what is accepted, never what was found (it may be the
            // secret, mistyped).
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(format!(
                    "a secret must be text (not shown here): {FORMS}"
                )))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(format!(
                    "a secret must be text, in quotes (the number is not shown here): {FORMS}"
                )))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(format!(
                    "a secret must be text, in quotes (the number is not shown here): {FORMS}"
                )))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(format!(
                    "a secret must be text, in quotes (the number is not shown here): {FORMS}"
                )))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(de::Error::custom(format!(
                    "a secret is one value, not a list: {FORMS}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a secret could not be read. Names the variable or file, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (the profile reads this secret from it): export it, or point the profile at a file with {{ file = \"...\" }}")]
    MissingEnv(String),
    #[error("environment variable {0} is set but empty")]
    EmptyEnv(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {0} is empty")]
    EmptyFile(PathBuf),
}

impl Secret {
    /// Reads the value. The returned string must only be handed to the backend client.
    pub fn reveal(&self) -> Result<String, SecretError> {
        match self {
            Secret::Env { env } => match std::env::var(env) {
                Ok(v) if v.is_empty() => Err(SecretError::EmptyEnv(env.clone())),
                Ok(v) => Ok(v),
                Err(_) => Err(SecretError::MissingEnv(env.clone())),
            },
            Secret::File { file } => {
                let path = expand_home(file);
                let text = std::fs::read_to_string(&path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                let v = text.trim_end_matches(['\n', '\r']).to_string();
                if v.is_empty() {
                    Err(SecretError::EmptyFile(path))
                } else {
                    Ok(v)
                }
            }
            Secret::Inline(v) => Ok(v.clone()),
        }
    }

    /// A description safe to show: where the secret comes from, not what it is.
    pub fn describe(&self) -> String {
        match self {
            Secret::Env { env } => format!("env:{env}"),
            Secret::File { file } => format!("file:{}", file.display()),
            Secret::Inline(_) => "***".to_string(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.describe())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.describe())
    }
}

/// Expands a leading `~/` to the home directory, as people write paths in profiles.
pub fn expand_home(p: &std::path::Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    p.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_values_never_show() {
        let s = Secret::Inline("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(s.reveal().unwrap(), "hunter2");
    }

    #[test]
    fn env_and_file_forms_parse_and_resolve() {
        let s: Secret = serde_json::from_str(r#"{"env":"LOMOB_TEST_SECRET_XYZ"}"#).unwrap();
        assert_eq!(s.describe(), "env:LOMOB_TEST_SECRET_XYZ");
        let e = s.reveal().unwrap_err().to_string();
        assert!(e.contains("LOMOB_TEST_SECRET_XYZ"), "{e}");

        let dir = std::env::temp_dir().join(format!("lomob-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("k");
        std::fs::write(&f, "s3cr3t\n").unwrap();
        let s = Secret::File { file: f.clone() };
        assert_eq!(s.reveal().unwrap(), "s3cr3t");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_shapes_are_rejected() {
        assert!(serde_json::from_str::<Secret>(r#"{"envv":"X"}"#).is_err());
    }

    /// Reliability suite (#15): `{ environment = "X" }` gave "data did not match any variant
    /// of untagged enum Secret", and a secret mistyped as a number would be printed.
    #[test]
    fn a_malformed_secret_says_how_to_write_one_and_never_shows_the_value() {
        for (json, says) in [
            (r#"{"environment":"X"}"#, "no key `environment`"),
            (r#"{"env":"X","file":"/k"}"#, "not both"),
            (r#"{"env":5}"#, "`env` must be a string"),
            (r#"{}"#, "is empty"),
            (r#"["hunter2"]"#, "not a list"),
            ("123456789", "in quotes"),
        ] {
            let e = serde_json::from_str::<Secret>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{json}: {e}");
            assert!(e.contains("{ env = \"VARIABLE\" }"), "{json}: {e}");
            assert!(
                !e.contains("123456789") && !e.contains("hunter2"),
                "{json}: {e}"
            );
        }
        let s: Secret = serde_json::from_str(r#"{"file":"/k"}"#).unwrap();
        assert_eq!(s.describe(), "file:/k");
        let s: Secret = serde_json::from_str(r#""v""#).unwrap();
        assert_eq!(s, Secret::Inline("v".into()));
    }
}

//! Credentials in profiles, kept out of logs, error text and the manifest.
//!
//! A profile names where a secret lives (`{ env = "B2_KEY" }` or `{ file = "~/.config/k" }`)
//! rather than holding it; an inline string is accepted for quick tests but is printed as
//! `***` everywhere. The value is read only when an operator is built, so `lomob site list`
//! works without the secrets being present.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

/// Where a credential comes from. Never `Debug`-prints or serializes the value itself.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged, deny_unknown_fields)]
pub enum Secret {
    /// The name of an environment variable holding the value.
    Env { env: String },
    /// A file whose contents (trailing newline removed) are the value. `~/` is expanded.
    File { file: PathBuf },
    /// The value itself, written in the profile. Discouraged: a profile is often shared.
    Inline(String),
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
}

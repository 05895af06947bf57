//! Documented exit codes, so cron jobs and scripts can tell outcomes apart.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | success |
//! | 1 | failure: the command could not do its job (see the message) |
//! | 2 | usage or configuration error: fix the command line or the profile |
//! | 3 | partial: the command finished, but some files could not be read (listed) |
//! | 4 | the manifest is in use by another lomob process |
//! | 5 | a server could not be reached or kept failing; nothing was lost, run again later |
//! | 6 | integrity: a copy holds other bytes than it must (an alert: see the message) |
//! | 7 | a restore is waiting for a thaw: run the same command again after the time shown |

use std::process::ExitCode;

pub const SUCCESS: u8 = 0;
pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const PARTIAL: u8 = 3;
pub const IN_USE: u8 = 4;
pub const TRANSIENT: u8 = 5;
pub const INTEGRITY: u8 = 6;
pub const WAITING: u8 = 7;

/// The exit code of a failure of this kind.
pub fn for_kind(kind: lomob_backends::ErrorKind) -> u8 {
    use lomob_backends::ErrorKind as K;
    match kind {
        K::Config | K::Permission => USAGE,
        K::Transient => TRANSIENT,
        K::Integrity => INTEGRITY,
        K::NotFound | K::Frozen | K::Space | K::Other => FAILURE,
    }
}

/// Picks the exit code for an error by looking through its chain of causes.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(crate::manifest::ManifestError::InUse { .. }) = cause.downcast_ref() {
            return IN_USE;
        }
        if cause.downcast_ref::<crate::config::ConfigError>().is_some() {
            return USAGE;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return USAGE;
        }
    }
    FAILURE
}

/// A mistake in how the command was called, found after argument parsing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

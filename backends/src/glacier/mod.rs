//! The `glacier` backend: S3 with a cold storage class (Deep Archive by default).
//!
//! It shares the connection settings of [`crate::s3::S3Config`] and adds what cold storage
//! means for the engine: reads need a thaw first, and objects are billed for a minimum
//! number of days, so the engine must never delete or overwrite them early.

mod config;

pub use config::GlacierConfig;

use crate::s3::S3Config;
use crate::storage_class::{StorageClass, ThawTier};
use crate::{BackendError, Capabilities, ChecksumKind};

impl GlacierConfig {
    /// The connection settings.
    pub fn s3(&self) -> &S3Config {
        &self.0
    }

    /// The cold class objects are written in.
    pub fn class(&self) -> StorageClass {
        self.0.effective_class(StorageClass::DeepArchive)
    }

    pub fn validate(&self) -> Result<(), BackendError> {
        self.0.validate("glacier")?;
        if !self.class().is_cold() {
            return Err(BackendError::invalid(
                "glacier",
                format!(
                    "`storage-class` {} is not a cold class: use DEEP_ARCHIVE, GLACIER or GLACIER_IR, or kind = \"s3\"",
                    self.class().as_str()
                ),
            ));
        }
        if self.0.thaw_days == Some(0) {
            return Err(BackendError::invalid(
                "glacier",
                "`thaw-days` must be at least 1",
            ));
        }
        Ok(())
    }

    pub fn capabilities(&self) -> Capabilities {
        let class = self.class();
        Capabilities {
            needs_thaw: class.needs_thaw(),
            min_storage_days: class.min_storage_days(),
            storage_class: Some(class.as_str().into()),
            free_quota: None,
            ..Capabilities::hot(ChecksumKind::Md5Etag)
        }
    }

    pub fn operator(&self) -> Result<opendal::Operator, BackendError> {
        self.0.operator_with_class("glacier", self.class())
    }

    /// How a thaw is asked for (bulk by default: the cheapest).
    pub fn thaw_tier(&self) -> ThawTier {
        self.0.thaw_tier.unwrap_or(ThawTier::Bulk)
    }

    /// Days a thawed copy stays readable (7 by default).
    pub fn thaw_days(&self) -> u32 {
        self.0.thaw_days.unwrap_or(7)
    }
}

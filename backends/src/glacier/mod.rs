//! The `glacier` backend: S3 with a cold storage class (Deep Archive by default).
//!
//! It shares the connection settings of [`crate::s3::S3Config`] and adds what cold storage
//! means for the engine: reads need a thaw first, and objects are billed for a minimum
//! number of days, so the engine must never delete or overwrite them early.

mod config;

pub use config::{StorageClass, ThawTier};

use crate::s3::S3Config;
use crate::{BackendError, Capabilities, ChecksumKind};

/// `kind = "glacier"` is an S3 bucket written with a cold storage class.
pub type GlacierConfig = S3Config;

impl StorageClass {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
        }
    }

    /// True for classes meant for archives (billed minimum durations).
    pub fn is_cold(self) -> bool {
        matches!(
            self,
            StorageClass::GlacierIr | StorageClass::Glacier | StorageClass::DeepArchive
        )
    }

    /// Reads fail until a RestoreObject request completes.
    pub fn needs_thaw(self) -> bool {
        matches!(self, StorageClass::Glacier | StorageClass::DeepArchive)
    }

    /// AWS bills objects deleted earlier than this as if they had been kept.
    pub fn min_storage_days(self) -> u32 {
        match self {
            StorageClass::DeepArchive => 180,
            StorageClass::Glacier | StorageClass::GlacierIr => 90,
            StorageClass::StandardIa | StorageClass::OnezoneIa => 30,
            StorageClass::Standard | StorageClass::IntelligentTiering => 0,
        }
    }
}

impl S3Config {
    fn cold_class(&self) -> StorageClass {
        self.effective_class(StorageClass::DeepArchive)
    }
}

/// Cold-specific behaviour of a [`GlacierConfig`]; named functions because the type is
/// shared with the `s3` kind.
pub trait Glacier {
    fn validate(&self) -> Result<(), BackendError>;
    fn capabilities(&self) -> Capabilities;
    fn operator(&self) -> Result<opendal::Operator, BackendError>;
    fn thaw_tier(&self) -> ThawTier;
    fn thaw_days(&self) -> u32;
}

impl Glacier for GlacierConfig {
    fn validate(&self) -> Result<(), BackendError> {
        S3Config::validate(self, "glacier")?;
        if !self.cold_class().is_cold() {
            return Err(BackendError::invalid(
                "glacier",
                format!(
                    "`storage-class` {} is not a cold class: use DEEP_ARCHIVE, GLACIER or GLACIER_IR, or kind = \"s3\"",
                    self.cold_class().as_str()
                ),
            ));
        }
        if self.thaw_days == Some(0) {
            return Err(BackendError::invalid(
                "glacier",
                "`thaw-days` must be at least 1",
            ));
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        let class = self.cold_class();
        Capabilities {
            needs_thaw: class.needs_thaw(),
            min_storage_days: class.min_storage_days(),
            storage_class: Some(class.as_str().into()),
            free_quota: None,
            ..Capabilities::hot(ChecksumKind::Md5Etag)
        }
    }

    fn operator(&self) -> Result<opendal::Operator, BackendError> {
        self.operator_with_class("glacier", self.cold_class())
    }

    fn thaw_tier(&self) -> ThawTier {
        self.thaw_tier.unwrap_or(ThawTier::Bulk)
    }

    fn thaw_days(&self) -> u32 {
        self.thaw_days.unwrap_or(7)
    }
}

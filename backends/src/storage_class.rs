//! S3 storage classes and Glacier retrieval tiers: what the `s3` and `glacier` kinds write
//! and what cold storage means for the engine (thaw, minimum storage duration). Shared by
//! both kinds, so neither imports the other for it.

use serde::{Deserialize, Serialize};

/// S3 storage classes lomob writes.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StorageClass {
    Standard,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    /// Glacier Instant Retrieval: cold prices, no thaw, 90 days minimum.
    GlacierIr,
    /// Glacier Flexible Retrieval: thaw needed, 90 days minimum.
    Glacier,
    /// Glacier Deep Archive: the cheapest; thaw needed, 180 days minimum.
    DeepArchive,
}

/// Glacier retrieval tiers, cheapest first.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ThawTier {
    Bulk,
    Standard,
    Expedited,
}

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

impl StorageClass {
    /// Parses an `x-amz-storage-class` value.
    pub fn parse(s: &str) -> Option<StorageClass> {
        Some(match s {
            "STANDARD" => StorageClass::Standard,
            "STANDARD_IA" => StorageClass::StandardIa,
            "ONEZONE_IA" => StorageClass::OnezoneIa,
            "INTELLIGENT_TIERING" => StorageClass::IntelligentTiering,
            "GLACIER_IR" => StorageClass::GlacierIr,
            "GLACIER" => StorageClass::Glacier,
            "DEEP_ARCHIVE" => StorageClass::DeepArchive,
            _ => return None,
        })
    }
}

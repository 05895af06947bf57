//! Profile values specific to cold S3 storage classes.

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

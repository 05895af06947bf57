//! The `glacier` section of a profile: the S3 connection settings of [`S3Config`], written
//! with a cold storage class.

use serde::{Deserialize, Serialize};

use crate::s3::S3Config;

/// `kind = "glacier"`: an S3 bucket written with a cold storage class (Deep Archive by
/// default). Its keys are those of `kind = "s3"`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct GlacierConfig(pub S3Config);

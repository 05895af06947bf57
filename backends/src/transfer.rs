//! Network behaviour shared by every backend of a site: retries, timeouts, concurrency and
//! bandwidth, applied to an operator in one place so every kind behaves the same.

use std::time::Duration;

use opendal::layers::{RetryLayer, ThrottleLayer, TimeoutLayer, TracingLayer};
use opendal::Operator;
use serde::{Deserialize, Serialize};

use crate::size::ByteSize;

/// `[sites.NAME.transfer]` in a profile.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TransferConfig {
    /// Attempts after the first for a failed request (with exponential backoff and jitter).
    /// Default 6.
    pub retries: usize,
    /// Seconds a single request may take before it is retried. Large multipart parts need
    /// minutes on a home uplink, so this is generous. Default 600.
    pub timeout_secs: u64,
    /// Requests in flight at once against this backend. Default 8.
    pub concurrency: usize,
    /// Upload bandwidth limit per backend, e.g. "2MB" per second. Default: none.
    pub bandwidth_limit: Option<ByteSize>,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            retries: 6,
            timeout_secs: 600,
            concurrency: 8,
            bandwidth_limit: None,
        }
    }
}

impl TransferConfig {
    /// Wraps an operator with timeout (inside retry, so each attempt is timed), retry with
    /// jitter, an optional throttle and tracing. `concurrency` is applied by the engine,
    /// which bounds its own uploads: OpenDAL's concurrency layer holds a permit for a
    /// writer's whole life, so a full set of open writers each verifying with a `stat`
    /// would wait on each other forever.
    pub fn apply(&self, op: Operator) -> Operator {
        let timeout = Duration::from_secs(self.timeout_secs.max(1));
        let mut op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(timeout)
                    .with_io_timeout(timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(self.retries)
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(60)),
            );
        if let Some(limit) = self.bandwidth_limit {
            let bps = u32::try_from(limit.bytes().max(1)).unwrap_or(u32::MAX);
            op = op.layer(ThrottleLayer::new(bps, bps));
        }
        op.layer(TracingLayer::default())
    }
}

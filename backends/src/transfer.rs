//! Network behaviour shared by every backend of a site: retries, timeouts, concurrency,
//! memory and bandwidth, applied in one place so every kind behaves the same.
//!
//! Bandwidth is paced by one [`Pacer`] per site, shared by every upload of that site (the
//! engine's OpenDAL writes and the S3 client's requests alike), rather than by OpenDAL's
//! `ThrottleLayer`: that layer's burst equals its rate, so with `bandwidth-limit = "2MB"`
//! every write larger than 2 MB failed ("burst size is smaller than the request size").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer, TracingLayer};
use opendal::Operator;
use serde::{Deserialize, Serialize};

use crate::size::ByteSize;

/// The default of the transfer setting `memory-budget`: parts held in memory at once, over
/// all in-flight parts of one upload. With the default 256 MiB parts this allows 4 in flight
/// even when the site's concurrency is higher, so a small home server is not pushed into
/// swap.
pub const MEMORY_BUDGET: u64 = 1 << 30;

/// The first wait before a retry; it doubles on each retry, with jitter.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(200);
/// The longest wait before a retry.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(20);

/// `[sites.NAME.transfer]` in a profile.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TransferConfig {
    /// Attempts after the first for a failed request (with exponential backoff and jitter).
    /// Default 6.
    pub retries: usize,
    /// Seconds a single request may take before it is retried (time spent waiting for the
    /// bandwidth limit is not counted). Large multipart parts need minutes on a home uplink,
    /// so this is generous. Default 600.
    pub timeout_secs: u64,
    /// Requests in flight at once against this backend. Default 8.
    pub concurrency: usize,
    /// Upload bandwidth limit per site, e.g. "2MB" per second, shared by all its uploads.
    /// Default: none.
    pub bandwidth_limit: Option<ByteSize>,
    /// Memory one multipart upload may hold for parts read ahead and parts in flight, e.g.
    /// "1GiB" (the default). At least one part is always held, so with the default 256MiB
    /// parts this allows 4 in flight even when `concurrency` is higher; lower it on a small
    /// home server so an upload does not push it into swap.
    pub memory_budget: ByteSize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            retries: 6,
            timeout_secs: 600,
            concurrency: 8,
            bandwidth_limit: None,
            memory_budget: ByteSize(MEMORY_BUDGET),
        }
    }
}

impl TransferConfig {
    /// Wraps an operator with timeout (inside retry, so each attempt is timed), retry with
    /// jitter and tracing. `concurrency` is applied by the engine, which bounds its own
    /// uploads: OpenDAL's concurrency layer holds a permit for a writer's whole life, so a
    /// full set of open writers each verifying with a `stat` would wait on each other
    /// forever. Bandwidth is not limited here: pace writes with [`TransferConfig::pacer`].
    pub fn apply(&self, op: Operator) -> Operator {
        let timeout = Duration::from_secs(self.timeout_secs.max(1));
        op.layer(
            TimeoutLayer::new()
                .with_timeout(timeout)
                .with_io_timeout(timeout),
        )
        .layer(
            RetryLayer::new()
                .with_max_times(self.retries)
                .with_jitter()
                .with_min_delay(RETRY_MIN_DELAY)
                .with_max_delay(RETRY_MAX_DELAY),
        )
        .layer(TracingLayer::default())
    }

    /// The retry policy of every request lomob sends itself (the S3 client, the streamed
    /// PUT): the same as the one OpenDAL's operators get in [`TransferConfig::apply`],
    /// exponential from 200 ms with jitter (so parallel parts do not retry in lockstep), at
    /// most `retries` times. Callers retry only transient failures.
    pub fn retry_policy(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN_DELAY)
            .with_max_delay(RETRY_MAX_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.retries)
    }

    /// A new pacer for `bandwidth-limit`, or `None` without a limit. Each call makes a new
    /// one: build it once per site and share it between that site's uploads.
    pub fn pacer(&self) -> Option<Arc<Pacer>> {
        self.bandwidth_limit
            .map(|limit| Arc::new(Pacer::new(limit.bytes())))
    }
}

/// Keeps the bytes sent through it under a rate, for any size of transfer and any number of
/// concurrent transfers sharing it (`Arc<Pacer>`).
///
/// Senders charge what they have just sent with [`Pacer::pace`], chunk by chunk (1 MiB or
/// less, so the rate is smooth); each charge takes the next free slot of `bytes / rate`
/// seconds on one shared timeline and returns when that slot ends. A transfer of N bytes
/// thus takes about N / rate, and concurrent transfers share the rate. Idle time is not
/// saved up as a burst allowance.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_sec: u64,
    /// When the timeline is free again.
    next_free: Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// A pacer for `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec: bytes_per_sec.max(1),
            next_free: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// The rate, in bytes per second.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Charges `bytes` and returns when they fit under the limit: at the end of their slot
    /// on the shared timeline.
    pub async fn pace(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let end = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let start = (*next).max(tokio::time::Instant::now());
            *next = start + cost;
            *next
        };
        tokio::time::sleep_until(end).await;
    }
}

/// Pieces a paced body is sent in: small (at most 1 MiB), so the achieved rate is smooth
/// whatever the size of the object.
pub const PACE_CHUNK: usize = 256 << 10;

/// How long the pacer held a body back: request timeouts count only the network's time.
#[derive(Debug, Default)]
pub struct PaceClock {
    pub held_ns: AtomicU64,
    /// True while the body waits for the pacer.
    pub pacing: AtomicBool,
}

/// `body` cut into pieces of at most [`PACE_CHUNK`] bytes, each charged to `pacer` after it
/// was handed to the connection (the next piece follows at the end of its slot), so a body
/// of N bytes takes about N / rate, and concurrent bodies sharing the pacer share the rate.
pub fn paced_body<S>(
    body: S,
    pacer: Option<Arc<Pacer>>,
    clock: Arc<PaceClock>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    use futures::StreamExt;
    let Some(pacer) = pacer else {
        // No limit: the body goes as it comes, in the reader's own (larger) pieces.
        return body.left_stream();
    };
    struct State<S> {
        body: std::pin::Pin<Box<S>>,
        rest: Bytes,
        /// The piece handed out last, not yet charged.
        sent: u64,
    }
    let state = State {
        body: Box::pin(body),
        rest: Bytes::new(),
        sent: 0,
    };
    futures::stream::unfold(state, move |mut st| {
        let (pacer, clock) = (pacer.clone(), clock.clone());
        async move {
            if st.sent > 0 {
                clock.pacing.store(true, Ordering::Relaxed);
                let t = tokio::time::Instant::now();
                pacer.pace(st.sent).await;
                let held = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                clock.held_ns.fetch_add(held, Ordering::Relaxed);
                clock.pacing.store(false, Ordering::Relaxed);
            }
            st.sent = 0;
            while st.rest.is_empty() {
                match st.body.next().await {
                    None => return None,
                    Some(Err(e)) => return Some((Err(e), st)),
                    Some(Ok(b)) => st.rest = b,
                }
            }
            let piece = st.rest.split_to(st.rest.len().min(PACE_CHUNK));
            st.sent = piece.len() as u64;
            Some((Ok(piece), st))
        }
    })
    .right_stream()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_parses_and_defaults() {
        let t: TransferConfig = toml::from_str("memory-budget = \"10MiB\"").unwrap();
        assert_eq!(t.memory_budget, ByteSize::mib(10));
        assert_eq!(TransferConfig::default().memory_budget, ByteSize(1 << 30));
        assert!(toml::from_str::<TransferConfig>("memory_budget = \"10MiB\"").is_err());
        assert!(TransferConfig::default().pacer().is_none());
    }

    /// OpenDAL's ThrottleLayer (burst = rate) refused every write larger than the limit.
    #[tokio::test]
    async fn a_bandwidth_limit_does_not_refuse_large_writes() {
        let dir = tempfile::tempdir().unwrap();
        let op = Operator::new(opendal::services::Fs::default().root(dir.path().to_str().unwrap()))
            .unwrap();
        let t = TransferConfig {
            bandwidth_limit: Some(ByteSize::mb(1)),
            ..TransferConfig::default()
        };
        let op = t.apply(op);
        op.write("big", vec![7u8; 3_000_000]).await.unwrap();
        assert_eq!(op.stat("big").await.unwrap().content_length(), 3_000_000);
    }

    #[tokio::test]
    async fn pacer_spreads_any_transfer_over_its_rate() {
        let ms = |t: tokio::time::Instant| t.elapsed().as_millis();
        let p = Arc::new(Pacer::new(10_000_000));
        let start = tokio::time::Instant::now();
        // 3 MB in 1 MB charges: about 300 ms, whatever the chunking.
        for _ in 0..3 {
            p.pace(1_000_000).await;
        }
        assert!((300..400).contains(&ms(start)), "{}", ms(start));
        // Two concurrent senders share the rate: 2 MB more take 200 ms more.
        let (a, b) = (p.clone(), p.clone());
        tokio::join!(a.pace(1_000_000), b.pace(1_000_000));
        assert!((500..650).contains(&ms(start)), "{}", ms(start));
        // Idle time is no burst allowance.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = tokio::time::Instant::now();
        p.pace(1_000_000).await;
        assert!((100..200).contains(&ms(t)), "{}", ms(t));
    }
}

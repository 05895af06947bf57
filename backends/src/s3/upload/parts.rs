//! The parts of a multipart upload: read once, in order, part by part, and sent up to the
//! transfer concurrency at once within the `memory-budget`; parts the server already holds
//! from an interrupted run are compared, not sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::progress::UploadProgress;
use crate::journal::{DonePart, UploadJournal, UploadState};
use crate::s3::client::{PartBody, S3Client};
use crate::source::{spawn_reader, ByteSource, Digests};
use crate::BackendError;

/// Reads the source once in order, part by part, and sends the parts the server lacks, up to
/// the transfer concurrency (within its `memory-budget`) at once. Returns the source's
/// digests and how many parts were sent and reused.
///
/// Every way out (a part that failed for good, a journal error, a source that differs)
/// drops the reader's [`StopReader`], which stops the reader wherever it waits: nothing is
/// left blocking the runtime's shutdown.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_parts(
    client: &S3Client,
    key: &str,
    source: Arc<dyn ByteSource>,
    part_size: u64,
    total: u32,
    state: &mut UploadState,
    unjournaled: &BTreeMap<u32, (u64, String)>,
    journal: &dyn UploadJournal,
    progress: &(dyn Fn(&UploadProgress) + Send + Sync),
) -> Result<(Digests, u32, u32), BackendError> {
    let len = source.len();
    // Parts in memory (read ahead, or in flight) stay within the budget, with at least one.
    let budget_bytes = client.transfer().memory_budget.bytes();
    let in_memory = usize::try_from((budget_bytes / part_size).max(1)).unwrap_or(1);
    let in_flight = client.transfer().concurrency.max(1).min(in_memory);
    let unit = usize::try_from(part_size).map_err(|_| {
        BackendError::invalid("s3", "a part does not fit in memory on this platform")
    })?;
    let budget = Arc::new(tokio::sync::Semaphore::new(in_memory));
    let mut reader = spawn_reader(
        source,
        key.to_string(),
        unit,
        Some(part_size),
        // Each part's MD5 is computed for its Content-MD5; the whole object's is not needed.
        false,
        1,
        Some(budget.clone()),
    );
    let journaled: BTreeMap<u32, DonePart> =
        state.parts.iter().map(|p| (p.number, p.clone())).collect();
    let (mut uploaded, mut reused) = (0u32, 0u32);
    let mut bytes_done: u64 = 0;
    let mut next: u32 = 1;
    // Dropped on every way out, which aborts the parts still in flight.
    let mut tasks: JoinSet<Result<DonePart, BackendError>> = JoinSet::new();
    let mut finish = |part: DonePart,
                      sent: bool,
                      state: &mut UploadState,
                      bytes_done: &mut u64|
     -> Result<(), BackendError> {
        // Its buffer is gone: the reader may read one more part.
        budget.add_permits(1);
        *bytes_done += part.size;
        let (number, size) = (part.number, part.size);
        if sent {
            uploaded += 1;
            state.parts.push(part);
            state.parts.sort_by_key(|p| p.number);
            journal.save(state)?;
        } else {
            reused += 1;
        }
        progress(&UploadProgress {
            part_number: number,
            part_size: size,
            reused: !sent,
            parts_done: uploaded + reused,
            parts_total: total,
            bytes_done: *bytes_done,
            bytes_total: len,
        });
        Ok(())
    };
    let joined = |j: Result<Result<DonePart, BackendError>, tokio::task::JoinError>| {
        j.map_err(|e| BackendError::Journal(format!("part task failed: {e}")))?
    };
    loop {
        // Take the next part from the reader when a slot is free.
        if next <= total && tasks.len() < in_flight {
            let chunk = tokio::select! {
                c = reader.rx.recv() => c,
                Some(j) = tasks.join_next() => {
                    finish(joined(j)?, true, state, &mut bytes_done)?;
                    continue;
                }
            };
            let (data, md5) = match chunk {
                Some(Ok((b, Some(md5)))) => (b, md5),
                // The reader reports its own error.
                Some(Ok((_, None))) | Some(Err(_)) | None => {
                    tasks.abort_all();
                    return Err(match reader.finish().await {
                        Err(e) => e,
                        Ok(_) => BackendError::Journal("the source ended early".into()),
                    });
                }
            };
            let n = next;
            next += 1;
            let body = PartBody::with_md5(data, md5);
            if let Some(done) = journaled.get(&n) {
                if done.md5 != body.md5_hex {
                    return Err(BackendError::Check {
                        key: key.to_string(),
                        message: format!(
                            "part {n} read now differs from the one sent by the interrupted upload; starting over"
                        ),
                    });
                }
                finish(done.clone(), false, state, &mut bytes_done)?;
                continue;
            }
            if let Some((server_size, server_etag)) = unjournaled.get(&n) {
                if *server_size == body.data.len() as u64
                    && server_etag.trim_matches('"') == body.md5_hex
                {
                    let part = DonePart {
                        number: n,
                        size: *server_size,
                        etag: server_etag.clone(),
                        md5: body.md5_hex.clone(),
                    };
                    state.parts.push(part.clone());
                    state.parts.sort_by_key(|p| p.number);
                    journal.save(state)?;
                    finish(part, false, state, &mut bytes_done)?;
                    continue;
                }
            }
            let (client, key, upload_id) =
                (client.clone(), key.to_string(), state.upload_id.clone());
            tasks.spawn(async move {
                let etag = client.upload_part(&key, &upload_id, n, &body).await?;
                Ok(DonePart {
                    number: n,
                    size: body.data.len() as u64,
                    etag,
                    md5: body.md5_hex,
                })
            });
            continue;
        }
        let Some(j) = tasks.join_next().await else {
            break;
        };
        // An error returns at once: the other parts are aborted and the reader stopped; the
        // journal keeps the parts that finished, for the next run.
        finish(joined(j)?, true, state, &mut bytes_done)?;
    }
    // Every part was taken: the reader has nothing left to wait for.
    let digests = reader.finish().await?;
    Ok((digests, uploaded, reused))
}

//! One streamed PutObject, read once in order and never held in memory, checked against
//! the server's MD5 ETag; a transient failure sends it again from byte 0.

use std::sync::Arc;

use base64::Engine as _;

use super::progress::UploadProgress;
use crate::s3::client::{S3Client, StreamPut};
use crate::source::{reader_result, spawn_reader, ByteSource, Digests, Reader, STREAM_CHUNK};
use crate::{BackendError, ErrorKind};

/// Sends `source` as one streamed PutObject, read once in order and never held in memory.
/// A transient failure sends it again from its first byte (a PUT is all or nothing: the
/// server keeps no partial object); a failing source is not retried. The server's ETag must
/// equal the MD5 computed while reading, unless the bucket encrypts with KMS (whose ETags
/// are not MD5s).
///
/// With `sha256` (the source's SHA-256, known before sending, e.g. from a scan) the request
/// carries `x-amz-checksum-sha256`, which servers that support it (AWS) check against the
/// bytes they got, refusing the object otherwise; the result says whether the server echoed
/// it. The SHA-256 computed while reading must equal it too.
pub async fn put_streamed(
    client: &S3Client,
    key: &str,
    source: Arc<dyn ByteSource>,
    metadata: &[(String, String)],
    sha256: Option<[u8; 32]>,
    progress: &(dyn Fn(&UploadProgress) + Send + Sync),
) -> Result<(StreamPut, Digests), BackendError> {
    use backon::Retryable as _;
    (|| put_once(client, key, source.clone(), metadata, sha256, progress))
        .retry(client.transfer().retry_policy())
        .sleep(tokio::time::sleep)
        // A failing source is never worth sending again, nor a wrong answer.
        .when(|e| e.kind() == ErrorKind::Transient && !matches!(e, BackendError::Source { .. }))
        .notify(|e, delay| {
            tracing::info!(key, ?delay, "streamed upload failed, sending again: {e}")
        })
        .await
}

/// One attempt of [`put_streamed`], from the source's first byte.
async fn put_once(
    client: &S3Client,
    key: &str,
    source: Arc<dyn ByteSource>,
    metadata: &[(String, String)],
    sha256: Option<[u8; 32]>,
    progress: &(dyn Fn(&UploadProgress) + Send + Sync),
) -> Result<(StreamPut, Digests), BackendError> {
    use futures::StreamExt;
    let len = source.len();
    let Reader { rx, handle, stop } =
        spawn_reader(source, key.to_string(), STREAM_CHUNK, None, true, 8, None);
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let body = {
        let sent = sent.clone();
        tokio_stream_of(rx).map(move |c| {
            c.map(|(b, _)| {
                sent.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                b
            })
        })
    };
    // Owns the body, hence the reader's channel: dropped as soon as it is done, so the
    // reader is never left waiting for a channel slot.
    let mut put = Box::pin(client.put_object_stream(key, len, body, metadata, sha256));
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let result = loop {
        tokio::select! {
            r = &mut put => break r,
            _ = tick.tick() => progress(&UploadProgress {
                part_number: 1,
                part_size: len,
                reused: false,
                parts_done: 0,
                parts_total: 1,
                bytes_done: sent.load(std::sync::atomic::Ordering::Relaxed),
                bytes_total: len,
            }),
        }
    };
    drop(put);
    // The request is over: a reader still waiting (a request that failed before taking the
    // whole body) stops at once. The body may still be held by the HTTP connection, which is
    // why the reader is told to stop and not merely left without a receiver.
    stop.stop();
    // The source's own failure explains a cut-short request better than the network error
    // it caused; otherwise the request's failure is the one to tell (and maybe retry).
    let (put, d) = match (result, reader_result(handle).await) {
        (_, Err(e @ BackendError::Source { .. })) => return Err(e),
        (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
        (Ok(put), Ok(d)) => (put, d),
    };
    check_answer(key, &put, &d, sha256)?;
    progress(&UploadProgress {
        part_number: 1,
        part_size: len,
        reused: false,
        parts_done: 1,
        parts_total: 1,
        bytes_done: len,
        bytes_total: len,
    });
    Ok((put, d))
}

/// What the server said it stored must be what was sent: an MD5-shaped ETag must be the
/// MD5 (some S3-compatible servers use another scheme, and KMS encryption does: then the
/// caller verifies otherwise), and a SHA-256 declared or echoed must be the one computed.
fn check_answer(
    key: &str,
    put: &StreamPut,
    d: &Digests,
    sha256: Option<[u8; 32]>,
) -> Result<(), BackendError> {
    let check = |message: String| BackendError::Check {
        key: key.to_string(),
        message,
    };
    let md5 = hex::encode(d.md5.unwrap_or_default());
    let etag = put.etag.trim_matches('"');
    let md5_shaped = etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit());
    if !md5_shaped || put.kms {
        tracing::debug!(key, etag, "the ETag is not an MD5; not compared");
    } else if !etag.eq_ignore_ascii_case(&md5) {
        return Err(check(format!(
            "the server's ETag {} is not the MD5 {md5} of the bytes sent",
            put.etag
        )));
    }
    if let Some(want) = sha256 {
        if d.sha256 != want {
            return Err(check(format!(
                "the bytes sent have SHA-256 {}, not the {} declared for them",
                hex::encode(d.sha256),
                hex::encode(want)
            )));
        }
    }
    if let Some(echo) = &put.checksum_sha256 {
        let ours = base64::engine::general_purpose::STANDARD.encode(d.sha256);
        if *echo != ours {
            return Err(check(format!(
                "the server's SHA-256 checksum {echo} is not {ours}, the SHA-256 of the bytes sent"
            )));
        }
    }
    Ok(())
}

/// A channel receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

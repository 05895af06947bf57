//! Regression tests for the S3 safety issue: no upload hangs on an error path, the AWS
//! credential chain is used when the profile has no keys, interrupted uploads are only
//! adopted when a server checksum proves them ours, and the bandwidth limit holds for any
//! object size. Against moto and rclone serve s3 (`scripts/services.sh start`); without them
//! every test prints SKIPPED (or fails when `LOMOB_REQUIRE_SERVICES=1`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use lomob_backends::glacier::StorageClass;
use lomob_backends::s3::{
    put_streamed, upload_resumable, JsonFileJournal, UploadJournal, UploadProgress,
};
use lomob_backends::{ByteSize, ErrorKind, TransferConfig};
use support::front::{Answer, HttpFront};
use support::proxy::OutageProxy;
use support::*;

const MIB: u64 = 1 << 20;

fn no_progress() -> impl Fn(&UploadProgress) + Send + Sync {
    |_: &UploadProgress| {}
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Drops `rt` on another thread and fails when that takes longer than `bound`: a blocking
/// task still waiting (a source reader waiting for memory or a channel slot that never
/// comes) makes the drop wait forever, and a process never exit.
fn shuts_down(rt: tokio::runtime::Runtime, bound: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(rt);
        let _ = tx.send(());
    });
    rx.recv_timeout(bound)
        .expect("the runtime did not shut down: a blocking task was left waiting");
}

/// Issue 1: a multipart upload whose parts fail for good (an outage longer than the
/// retries) returns its error, and leaves no source reader waiting for a memory permit.
#[test]
fn a_multipart_upload_failing_for_good_returns_and_leaves_no_reader_waiting() {
    let Some(server) = moto() else { return };
    let rt = runtime();
    let data = Arc::new(test_data(40_000_000, 21));
    let source = Arc::new(MemSource(data));
    let held = Arc::downgrade(&source);
    let dir = tempfile::tempdir().unwrap();
    let journal = JsonFileJournal::new(dir.path().join("j.json"));
    let result = rt.block_on(async {
        let setup = fresh_bucket(&server, "hang", StorageClass::Standard).await;
        // Create goes through; the network goes silent in the middle of the first part,
        // while the second is in flight too and the reader waits for memory for the third.
        let proxy = OutageProxy::start(server_addr(&server), MIB).await;
        let t = TransferConfig {
            retries: 0,
            timeout_secs: 2,
            memory_budget: ByteSize::mib(10),
            ..TransferConfig::default()
        };
        let via = Server {
            endpoint: proxy.endpoint(),
            ..server.clone()
        };
        let c = client_for(&via, setup.bucket(), StorageClass::Standard, &t);
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            upload_resumable(
                &c,
                "hang.iso",
                source,
                5 * MIB,
                &[],
                &journal,
                &no_progress(),
            ),
        )
        .await;
        assert!(proxy.is_down(), "the outage happened");
        r
    });
    let e = result
        .expect("the upload returned within 60 s")
        .expect_err("the upload failed");
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    // The journal keeps the upload, for the next run to resume.
    assert_eq!(journal.list().unwrap().len(), 1);
    shuts_down(rt, Duration::from_secs(30));
    assert!(held.upgrade().is_none(), "the reader let go of the source");
}

/// Issue 1, streamed PUT: a server that refuses the request before reading its body, and
/// then neither reads nor closes, leaves the body (and the reader's channel) with the HTTP
/// connection; the reader, blocked on a full channel, must still stop, and the refusal come
/// back at once (not when the connection pool happens to let go of the body).
#[test]
fn a_streamed_put_refused_before_its_body_was_read_returns() {
    let Some(server) = moto() else { return };
    let rt = runtime();
    let source = Arc::new(MemSource(Arc::new(test_data(40_000_000, 22))));
    let held = Arc::downgrade(&source);
    let result = rt.block_on(async {
        let front = HttpFront::start(server_addr(&server), |h| {
            if h.method == "PUT" {
                Answer::ErrorAndHold {
                    status: 403,
                    code: "AccessDenied",
                }
            } else {
                Answer::Forward
            }
        })
        .await;
        let via = Server {
            endpoint: front.endpoint(),
            ..server.clone()
        };
        let c = client_for(&via, "any", StorageClass::Standard, &quick_transfer());
        tokio::time::timeout(
            Duration::from_secs(15),
            put_streamed(&c, "p.iso", source, &[], None, &no_progress()),
        )
        .await
    });
    let e = result
        .expect("the PUT returned within 15 s")
        .expect_err("the PUT was refused");
    assert_eq!(e.kind(), ErrorKind::Permission, "{e}");
    shuts_down(rt, Duration::from_secs(30));
    assert!(held.upgrade().is_none(), "the reader let go of the source");
}

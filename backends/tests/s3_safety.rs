//! Regression tests for the S3 safety issue: no upload hangs on an error path, the AWS
//! credential chain is used when the profile has no keys, interrupted uploads are only
//! adopted when a server checksum proves them ours, and the bandwidth limit holds for any
//! object size. Against moto and rclone serve s3 (`scripts/services.sh start`); without them
//! every test prints SKIPPED (or fails when `LOMOB_REQUIRE_SERVICES=1`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use lomob_backends::journal::{JsonFileJournal, UploadJournal, UploadState};
use lomob_backends::s3::{put_streamed, upload_resumable, UploadProgress};
use lomob_backends::source::read_digests;
use lomob_backends::StorageClass;
use lomob_backends::{BackendError, ByteSize, ErrorKind, TransferConfig};
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
            timeout_secs: 5,
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

/// The variable that makes [`credential_chain_child`] run (in a child process of this test
/// binary: the environment is process-wide).
const CHILD: &str = "LOMOB_TEST_CREDENTIAL_CHILD";

/// Runs [`credential_chain_child`] in a child process with `HOME` and only the given AWS
/// variables; returns its output.
fn credential_child(
    mode: &str,
    home: &std::path::Path,
    server: &Server,
    bucket: &str,
    aws: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["credential_chain_child", "--exact", "--nocapture"]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home)
        .env(CHILD, mode)
        .env("LOMOB_TEST_CHILD_ENDPOINT", &server.endpoint)
        .env("LOMOB_TEST_CHILD_BUCKET", bucket)
        .envs(aws.iter().copied());
    cmd.output().expect("run the child test")
}

/// Issue 2: with no keys in the profile, the AWS environment signs, as OpenDAL's S3 service
/// loads it: here the profile named by `AWS_PROFILE` in `~/.aws/credentials` (the default
/// profile holds wrong keys, which rclone would refuse). With nothing anywhere, the error
/// says what was tried and what to set.
#[test]
fn without_keys_in_the_profile_the_aws_credential_chain_signs() {
    let rt = runtime();
    for server in servers() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            format!(
                "[default]\naws_access_key_id = wrongkey\naws_secret_access_key = wrongsecret\n\n\
                 [lomobtest]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                server.key, server.secret
            ),
        )
        .unwrap();
        let bucket = rt
            .block_on(fresh_bucket(&server, "chain", StorageClass::Standard))
            .bucket()
            .to_string();
        let out = credential_child(
            "profile",
            home.path(),
            &server,
            &bucket,
            &[("AWS_PROFILE", "lomobtest")],
        );
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            server.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let back = rt
            .block_on(
                client_for(&server, &bucket, StorageClass::Standard, &quick_transfer())
                    .get_object("chain.txt", None),
            )
            .unwrap();
        assert_eq!(&back[..], b"signed by the AWS profile", "{}", server.name);
        if server.name == "rclone" {
            // The default profile's keys are refused: it really was `lomobtest` that signed.
            let out = credential_child("profile", home.path(), &server, &bucket, &[]);
            assert!(!out.status.success(), "the default profile signed");
        }

        let empty = tempfile::tempdir().unwrap();
        let out = credential_child(
            "none",
            empty.path(),
            &server,
            &bucket,
            &[("AWS_EC2_METADATA_DISABLED", "true")],
        );
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            server.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The child side of [`without_keys_in_the_profile_the_aws_credential_chain_signs`]; does
/// nothing unless started by it.
#[test]
fn credential_chain_child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let endpoint = std::env::var("LOMOB_TEST_CHILD_ENDPOINT").unwrap();
    let bucket = std::env::var("LOMOB_TEST_CHILD_BUCKET").unwrap();
    let config: lomob_backends::s3::S3Config =
        toml::from_str(&format!("bucket = \"{bucket}\"\nendpoint = \"{endpoint}\"")).unwrap();
    let c =
        lomob_backends::s3::S3Client::new(&config, "s3", StorageClass::Standard, &quick_transfer())
            .expect("a client without keys: credentials are loaded on the first request");
    let rt = runtime();
    match mode.as_str() {
        "profile" => {
            rt.block_on(c.put_object("chain.txt", b"signed by the AWS profile".to_vec(), &[]))
                .unwrap();
            let info = rt.block_on(c.head_object("chain.txt")).unwrap();
            assert_eq!(info.size, 25);
        }
        "none" => {
            let e = rt.block_on(c.head_object("chain.txt")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
            let text = e.to_string();
            for tried in [
                "AWS_ACCESS_KEY_ID",
                "AWS_PROFILE",
                "~/.aws/credentials",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "instance metadata",
                "`access-key-id`",
            ] {
                assert!(text.contains(tried), "names {tried}: {text}");
            }
            assert!(text.contains(&bucket), "{text}");
            assert_eq!(c.counters().snapshot().total(), 0, "nothing was sent");
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Issue 4: with `bandwidth-limit = "2MB"`, a 6 MB streamed PUT, a 12 MB multipart upload in
/// 5 MiB parts (two in flight, sharing the limit) and a 3 MB PUT from memory each go at the
/// limit, within 15%: paced in small pieces, not sent whole and then waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bandwidth_limit_holds_for_any_object_size() {
    let Some(server) = moto() else { return };
    let limit = 2_000_000.0;
    let t = TransferConfig {
        bandwidth_limit: Some(ByteSize::mb(2)),
        concurrency: 2,
        ..quick_transfer()
    };
    let c = fresh_bucket_with(&server, "pace", StorageClass::Standard, &t).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = JsonFileJournal::new(dir.path().join("j.json"));
    let check = |what: &str, bytes: usize, took: Duration| {
        let rate = bytes as f64 / took.as_secs_f64();
        eprintln!("{what}: {bytes} bytes in {took:?}: {rate:.0} B/s");
        assert!(
            (limit * 0.85..=limit * 1.15).contains(&rate),
            "{what}: {bytes} bytes in {took:?} is {rate:.0} B/s, not within 15% of {limit} B/s"
        );
    };
    for (key, len, part, parts) in [
        ("single.iso", 6_000_000, 16 * MIB, 1),
        ("multi.iso", 12_000_000, 5 * MIB, 3),
    ] {
        let data = Arc::new(test_data(len, 31));
        let started = std::time::Instant::now();
        let out = upload_resumable(
            &c,
            key,
            Arc::new(MemSource(data)),
            part,
            &[],
            &journal,
            &no_progress(),
        )
        .await
        .unwrap();
        check(key, len, started.elapsed());
        assert_eq!(out.parts_total, parts, "{key}");
    }
    let started = std::time::Instant::now();
    c.put_object("small.bin", test_data(3_000_000, 32), &[])
        .await
        .unwrap();
    check("put_object", 3_000_000, started.elapsed());
}

/// A journal that forgets to clear: the process died right after CompleteMultipartUpload,
/// before it could clear its journal entry.
struct DiesBeforeClearing(JsonFileJournal);

impl UploadJournal for DiesBeforeClearing {
    fn load(&self, key: &str) -> Result<Option<UploadState>, BackendError> {
        self.0.load(key)
    }
    fn save(&self, state: &UploadState) -> Result<(), BackendError> {
        self.0.save(state)
    }
    fn clear(&self, _key: &str) -> Result<(), BackendError> {
        Ok(())
    }
    fn list(&self) -> Result<Vec<UploadState>, BackendError> {
        self.0.list()
    }
}

fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Issue 3: an upload completed just before a crash is adopted on the next run only when a
/// checksum the server computed proves it ours (moto: the multipart ETag of the journaled
/// parts; rclone serve s3, whose HEAD reports the whole object's MD5: that MD5, read from the
/// source again). An object of the same size and fingerprint with other bytes is refused and
/// left as it is. The part size is in the object's metadata, and `read_digests` computes
/// what each server reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_completed_before_a_crash_is_adopted_only_on_a_server_checksum() {
    for server in servers() {
        let c = fresh_bucket(&server, "adopt", StorageClass::Standard).await;
        let data = Arc::new(test_data(12_000_000, 41));
        let fp = sha256_hex(&data);
        let metadata = meta(&[("fingerprint", &fp)]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.json");
        let first = upload_resumable(
            &c,
            "a.iso",
            Arc::new(MemSource(data.clone())),
            5 * MIB,
            &metadata,
            &DiesBeforeClearing(JsonFileJournal::new(&path)),
            &no_progress(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", server.name));
        let journal = JsonFileJournal::new(&path);
        assert!(journal.load("a.iso").unwrap().is_some(), "left journaled");
        let head = c.head_object("a.iso").await.unwrap();
        assert_eq!(
            head.metadata.get("part-size").map(String::as_str),
            Some("5242880"),
            "{}: {head:?}",
            server.name
        );
        let d = read_digests(Arc::new(MemSource(data.clone())), "a.iso", Some(5 * MIB))
            .await
            .unwrap();
        // The parts had their own MD5s; the whole object's comes from the reading pass.
        assert_eq!(first.md5, None);
        let whole = hex::encode(d.md5.expect("read_digests computes the whole MD5"));
        assert_eq!(
            d.multipart_etag.as_deref(),
            Some(first.computed_etag.as_str())
        );
        let reported = head.etag.trim_matches('"');
        if server.name == "rclone" {
            // rclone serve s3: the multipart ETag on Complete, the whole MD5 on HEAD.
            assert_eq!(reported, whole, "{head:?}");
        } else {
            assert_eq!(head.etag, first.computed_etag);
        }

        // The next run finds the upload gone (completed) and adopts the object.
        let before = c.counters().snapshot();
        let out = upload_resumable(
            &c,
            "a.iso",
            Arc::new(MemSource(data.clone())),
            5 * MIB,
            &metadata,
            &journal,
            &no_progress(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", server.name));
        let sent = c.counters().snapshot().since(&before);
        assert_eq!((out.parts_uploaded, out.parts_reused), (0, 3), "{out:?}");
        assert_eq!(sent.put + sent.post, 0, "nothing sent: {sent:?}");
        assert_eq!(out.sha256, fp);
        assert!(journal.list().unwrap().is_empty());

        // Same size, same fingerprint, other bytes (another writer, a torn copy): refused.
        let other = test_data(12_000_000, 42);
        let first = upload_resumable(
            &c,
            "b.iso",
            Arc::new(MemSource(data.clone())),
            5 * MIB,
            &metadata,
            &DiesBeforeClearing(JsonFileJournal::new(&path)),
            &no_progress(),
        )
        .await
        .unwrap();
        c.put_object(
            "b.iso",
            other.clone(),
            &meta(&[("fingerprint", &fp), ("part-size", "5242880")]),
        )
        .await
        .unwrap();
        let e = upload_resumable(
            &c,
            "b.iso",
            Arc::new(MemSource(data.clone())),
            5 * MIB,
            &metadata,
            &journal,
            &no_progress(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, BackendError::Check { .. }),
            "{}: {e}",
            server.name
        );
        let text = e.to_string();
        assert!(text.contains("not the one this upload completed"), "{text}");
        assert!(
            text.contains(first.computed_etag.trim_matches('"')),
            "{text}"
        );
        let back = c.get_object("b.iso", None).await.unwrap();
        assert_eq!(sha256_hex(&back), sha256_hex(&other), "left as it is");
    }
}

/// Issue 3: a permanent ListParts failure (here 501 NotImplemented from a front before the
/// real server) no longer blocks the object on every run: the old upload is aborted, its
/// journal entry cleared, and the upload starts over. A transient one fails this run only,
/// keeping the upload for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_list_parts_error_starts_over_and_a_transient_one_waits() {
    for server in servers() {
        let setup = fresh_bucket(&server, "listparts", StorageClass::Standard).await;
        let data = Arc::new(test_data(12_000_000, 51));
        let metadata = meta(&[("fingerprint", &sha256_hex(&data))]);
        let dir = tempfile::tempdir().unwrap();
        let journal = JsonFileJournal::new(dir.path().join("j.json"));
        let interrupted = |key: &'static str| {
            let (c, data, metadata, journal) = (&setup, data.clone(), &metadata, &journal);
            async move {
                upload_resumable(
                    c,
                    key,
                    Arc::new(FailingSource {
                        data,
                        fail_after: 6 * MIB,
                        changed: false,
                    }),
                    5 * MIB,
                    metadata,
                    journal,
                    &no_progress(),
                )
                .await
                .unwrap_err();
                journal.load(key).unwrap().expect("journaled").upload_id
            }
        };
        let through = |status: u16, code: &'static str| {
            HttpFront::start(server_addr(&server), move |h| {
                if h.method == "GET" && h.target.contains("uploadId=") {
                    Answer::Error { status, code }
                } else {
                    Answer::Forward
                }
            })
        };
        let t = TransferConfig {
            retries: 0,
            ..quick_transfer()
        };

        // Transient (503 SlowDown, no retries left): this run fails, the upload stays.
        let old = interrupted("t.iso").await;
        let front = through(503, "SlowDown").await;
        let via = Server {
            endpoint: front.endpoint(),
            ..server.clone()
        };
        let c = client_for(&via, setup.bucket(), StorageClass::Standard, &t);
        let e = upload_resumable(
            &c,
            "t.iso",
            Arc::new(MemSource(data.clone())),
            5 * MIB,
            &metadata,
            &journal,
            &no_progress(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient, "{}: {e}", server.name);
        assert_eq!(
            journal.load("t.iso").unwrap().map(|s| s.upload_id),
            Some(old.clone())
        );
        assert!(setup
            .list_multipart_uploads("")
            .await
            .unwrap()
            .iter()
            .any(|u| u.upload_id == old));

        // Permanent (501 NotImplemented): aborted, forgotten, sent again whole.
        let old = interrupted("p.iso").await;
        let front = through(501, "NotImplemented").await;
        let via = Server {
            endpoint: front.endpoint(),
            ..server.clone()
        };
        let c = client_for(&via, setup.bucket(), StorageClass::Standard, &t);
        let out = upload_resumable(
            &c,
            "p.iso",
            Arc::new(MemSource(data.clone())),
            5 * MIB,
            &metadata,
            &journal,
            &no_progress(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", server.name));
        assert!(front.answered() >= 1, "ListParts was refused");
        assert_ne!(out.upload_id.as_deref(), Some(old.as_str()));
        assert_eq!((out.parts_uploaded, out.parts_reused), (3, 0));
        assert!(journal.load("p.iso").unwrap().is_none());
        let open = setup.list_multipart_uploads("p.iso").await.unwrap();
        assert!(
            open.is_empty(),
            "{}: old upload left open: {open:?}",
            server.name
        );
        let back = setup.get_object("p.iso", None).await.unwrap();
        assert_eq!(sha256_hex(&back), sha256_hex(&data), "{}", server.name);
    }
}

/// Issue 3: a streamed PUT can carry the SHA-256 known before sending. moto echoes it (the
/// value sent, unchecked), rclone serve s3 does not; both keep it for HEAD with
/// `x-amz-checksum-mode: ENABLED`. A source whose bytes do not have the declared SHA-256 is
/// an error, whatever the server checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_put_carries_a_sha256_checksum() {
    use base64::Engine as _;
    for server in servers() {
        let c = fresh_bucket(&server, "checksum", StorageClass::Standard).await;
        let data = Arc::new(test_data(3_000_000, 61));
        let sha: [u8; 32] = hex::decode(sha256_hex(&data)).unwrap().try_into().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(sha);
        let (put, d) = put_streamed(
            &c,
            "c.bin",
            Arc::new(MemSource(data.clone())),
            &[],
            Some(sha),
            &no_progress(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", server.name));
        assert_eq!(d.sha256, sha);
        if let Some(echo) = &put.checksum_sha256 {
            assert_eq!(echo, &b64, "{}", server.name);
        }
        let head = c.head_object_with_checksum("c.bin").await.unwrap();
        assert_eq!(
            head.checksum_sha256.as_deref(),
            Some(b64.as_str()),
            "{}: {head:?}",
            server.name
        );
        let mut wrong = sha;
        wrong[0] ^= 1;
        let e = put_streamed(
            &c,
            "w.bin",
            Arc::new(MemSource(data.clone())),
            &[],
            Some(wrong),
            &no_progress(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, BackendError::Check { .. }),
            "{}: {e}",
            server.name
        );
    }
}

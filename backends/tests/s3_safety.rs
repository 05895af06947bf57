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

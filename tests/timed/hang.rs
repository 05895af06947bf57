//! A multipart image upload that fails for good (a network outage longer than the retries)
//! must end the run: lomob reports the error and exits, releasing the manifest, and the next
//! run is not refused as "in use" (exit 4). Before the fix, the image reader stayed blocked
//! waiting for memory that was never given back, the runtime's shutdown waited for it
//! forever, and the process never exited.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{s3_client, service_var, set_mtime, unique, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP forwarder that passes the first `limit` request bytes (over all connections),
/// then goes silent on every connection, open or new, until healed: an outage that outlasts
/// every retry. Requests in flight end by the client's timeout.
struct Outage {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    limit: Arc<AtomicU64>,
}

impl Outage {
    fn start(rt: &tokio::runtime::Runtime, upstream: SocketAddr, limit: u64) -> Outage {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let limit = Arc::new(AtomicU64::new(limit));
        let sent = Arc::new(AtomicU64::new(0));
        let (d, l) = (down.clone(), limit.clone());
        rt.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (down, limit, sent) = (d.clone(), l.clone(), sent.clone());
                tokio::spawn(async move {
                    if down.load(Ordering::SeqCst) {
                        // Hold the connection, answer nothing.
                        let _ = client.read_to_end(&mut Vec::new()).await;
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut up, mut back) = (vec![0u8; 65536], vec![0u8; 65536]);
                    loop {
                        tokio::select! {
                            r = client.read(&mut up) => {
                                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                                let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                                if total >= limit.load(Ordering::SeqCst) {
                                    down.store(true, Ordering::SeqCst);
                                }
                                if down.load(Ordering::SeqCst) {
                                    // Silence: keep both sockets open, pass nothing more.
                                    std::future::pending::<()>().await;
                                }
                                if server.write_all(&up[..n]).await.is_err() { return; }
                            }
                            r = server.read(&mut back) => {
                                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                                if client.write_all(&back[..n]).await.is_err() { return; }
                            }
                        }
                    }
                });
            }
        });
        Outage { addr, down, limit }
    }

    /// New connections pass again, without limit (the ones held silent stay so).
    fn heal(&self) {
        self.limit.store(u64::MAX, Ordering::SeqCst);
        self.down.store(false, Ordering::SeqCst);
    }
}

/// Waits for `child` to exit, at most `bound`; kills it and fails the test when it hangs.
fn exit_code_within(
    child: &mut std::process::Child,
    bound: Duration,
    what: &str,
    log: &std::path::Path,
) -> i32 {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: lomob did not exit within {bound:?} (it hangs):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_multipart_upload_failing_for_good_ends_the_run_and_frees_the_manifest() {
    let _serial = crate::support::serial();
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    for i in 0..40 {
        let data: Vec<u8> = (0..1_000_000u64)
            .map(|x| ((x * 2654435761 + i * 97) >> 7) as u8)
            .collect();
        let p = env.write(&format!("{:02}/IMG_{i:05}.jpg", i % 7), &data);
        set_mtime(&p, 1_600_000_000 + i as i64 * 3_600);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = format!("hang-{}", unique(&env));
    let client = s3_client(
        &ep,
        "k",
        "s",
        &bucket,
        lomob_backends::StorageClass::DeepArchive,
    );
    rt.block_on(client.create_bucket()).unwrap();
    let upstream: SocketAddr = ep.trim_start_matches("http://").parse().unwrap();
    // Small requests (marks, listings, the upload's creation) pass; the network goes silent
    // 1 MB into the image's parts, with two 5 MiB parts in flight and the image reader
    // waiting for memory for a third.
    let outage = Outage::start(&rt, upstream, 1_000_000);
    let root = env.path().display().to_string();
    let cfg = env.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.cold]\niso-size = \"1GB\"\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"glacier\", bucket = \"{bucket}\", endpoint = \"http://{}\", access-key-id = \"k\", secret-access-key = \"s\", part-size = \"5MiB\", single-put-max = \"0\" }}\n[sites.cold.transfer]\nretries = 0\ntimeout-secs = 5\nmemory-budget = \"10MiB\"\n",
            outage.addr
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    // Its messages go to a file: a pipe nobody reads could itself block the process.
    let log = env.path().join("stderr.log");
    let run = || {
        env.std_cmd()
            .args(["--config", &cfg, "backup", "--pack-now"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap()
    };
    let messages = || std::fs::read_to_string(&log).unwrap_or_default();

    let mut first = run();
    let code = exit_code_within(&mut first, Duration::from_secs(90), "first run", &log);
    let err = messages();
    assert_ne!(code, 0, "the outage must fail the run:\n{err}");
    assert!(
        err.contains("UploadPart"),
        "the failed part is reported:\n{err}"
    );
    assert!(
        outage.down.load(Ordering::SeqCst),
        "the outage happened:\n{err}"
    );

    // The manifest was released: the next run is not refused as "in use". With the network
    // back it resumes the upload.
    outage.heal();
    let mut second = run();
    let code = exit_code_within(&mut second, Duration::from_secs(90), "second run", &log);
    let err = messages();
    assert_ne!(code, 4, "the manifest is still held:\n{err}");
    assert_eq!(code, 0, "the second run resumes and finishes:\n{err}");
}

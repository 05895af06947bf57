//! Uploads one file with the resumable multipart driver and a JSON journal, printing a line
//! per part. Kill it at any moment and run it again with the same journal: it sends only
//! the parts the server does not hold yet. The integration tests kill it with SIGKILL to
//! prove that, and `scripts/bench-upload.sh` times it.
//!
//! ```text
//! AWS_ACCESS_KEY_ID=.. AWS_SECRET_ACCESS_KEY=.. cargo run -p lomob-backends --example s3_upload -- \
//!     --endpoint http://127.0.0.1:9000 --bucket b --key archive/x.iso --file x.iso \
//!     --journal x.journal.json [--part-size 268435456] [--concurrency 4] \
//!     [--bandwidth 10000000] [--class DEEP_ARCHIVE] [--no-fingerprint] \
//!     [--tls-fingerprint sha256:HEX]
//! ```
//!
//! `--tls-fingerprint` pins an https:// endpoint's certificate (a `lomob serve` receiver, or
//! any self-signed server): `scripts/bench-serve.sh` times it that way.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use lomob_backends::journal::JsonFileJournal;
use lomob_backends::s3::{upload_resumable, S3Client, S3Config};
use lomob_backends::source::FileSource;
use lomob_backends::StorageClass;
use lomob_backends::{ByteSize, Secret, TransferConfig};
use sha2::{Digest, Sha256};

fn usage(msg: &str) -> ! {
    eprintln!("s3_upload: {msg}");
    eprintln!(
        "usage: s3_upload --endpoint URL --bucket B --key K --file PATH --journal PATH \
         [--part-size BYTES] [--concurrency N] [--bandwidth BYTES_PER_SEC] [--class CLASS] [--no-fingerprint] \
         [--tls-fingerprint sha256:HEX]"
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut endpoint, mut bucket, mut key, mut file, mut journal) = (None, None, None, None, None);
    let mut part_size: u64 = 256 << 20;
    let mut transfer = TransferConfig::default();
    let mut class = StorageClass::Standard;
    let mut hash = true;
    let mut tls_fingerprint = None;
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--endpoint" => endpoint = Some(val()),
            "--bucket" => bucket = Some(val()),
            "--key" => key = Some(val()),
            "--file" => file = Some(val()),
            "--journal" => journal = Some(val()),
            "--part-size" => part_size = val().parse().unwrap_or_else(|_| usage("bad --part-size")),
            "--concurrency" => {
                transfer.concurrency = val().parse().unwrap_or_else(|_| usage("bad --concurrency"))
            }
            "--bandwidth" => {
                let bps: u64 = val().parse().unwrap_or_else(|_| usage("bad --bandwidth"));
                transfer.bandwidth_limit = Some(ByteSize(bps));
            }
            "--class" => {
                class = serde_json::from_str(&format!("\"{}\"", val()))
                    .unwrap_or_else(|_| usage("bad --class"))
            }
            "--no-fingerprint" | "--no-sha256" => hash = false,
            "--tls-fingerprint" => tls_fingerprint = Some(val()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let need = |v: Option<String>, n: &str| v.unwrap_or_else(|| usage(&format!("{n} is required")));
    let (endpoint, bucket, key, file, journal) = (
        need(endpoint, "--endpoint"),
        need(bucket, "--bucket"),
        need(key, "--key"),
        need(file, "--file"),
        need(journal, "--journal"),
    );

    let config = S3Config {
        bucket,
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        access_key_id: Some(Secret::Env {
            env: "AWS_ACCESS_KEY_ID".into(),
        }),
        secret_access_key: Some(Secret::Env {
            env: "AWS_SECRET_ACCESS_KEY".into(),
        }),
        prefix: "/".into(),
        virtual_host_style: false,
        storage_class: None,
        free_quota: None,
        thaw_tier: None,
        thaw_days: None,
        part_size: None,
        single_put_max: None,
        tls_fingerprint,
    };
    let kind = if class.is_cold() { "glacier" } else { "s3" };
    let client = S3Client::new(&config, kind, class, &transfer).unwrap_or_else(|e| {
        eprintln!("s3_upload: {e}");
        std::process::exit(1)
    });
    let source = FileSource::open(&file).unwrap_or_else(|e| usage(&format!("{file}: {e}")));
    // The file's identity without reading it (path, size, mtime): ties a resumed upload to the
    // same version of the file. The driver computes the SHA-256 while it sends.
    let mut metadata = Vec::new();
    if hash {
        let md = std::fs::metadata(&file).unwrap_or_else(|e| usage(&format!("{file}: {e}")));
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut h = Sha256::new();
        h.update(format!("{file}\0{}\0{mtime}", md.len()).as_bytes());
        metadata.push(("fingerprint".to_string(), hex::encode(h.finalize())));
    }
    let journal = JsonFileJournal::new(journal);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let started = Instant::now();
    let progress = |p: &lomob_backends::s3::UploadProgress| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "part {}/{} {} {} bytes ({} of {} bytes)",
            p.part_number,
            p.parts_total,
            if p.reused { "reused" } else { "done" },
            p.part_size,
            p.bytes_done,
            p.bytes_total
        );
        let _ = out.flush();
    };
    let result = rt.block_on(upload_resumable(
        &client,
        &key,
        Arc::new(source),
        part_size,
        &metadata,
        &journal,
        &progress,
    ));
    match result {
        Ok(o) => {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "done etag={} sha256={} parts={} uploaded={} reused={} upload_part_requests={} put={} post={} list={} head={} seconds={secs:.3}",
                o.etag,
                o.sha256,
                o.parts_total,
                o.parts_uploaded,
                o.parts_reused,
                o.requests.upload_part,
                o.requests.put,
                o.requests.post,
                o.requests.list,
                o.requests.head,
            );
        }
        Err(e) => {
            eprintln!("s3_upload: {e}");
            std::process::exit(1);
        }
    }
}

//! Benchmark helper: produce one ISO image of everything a manifest holds into a sink,
//! without writing it anywhere: the reading side of what `lomob sync` does while it uploads an
//! image (the upload driver reads the image once, in order, into SHA-256 and MD5).
//!
//!   cargo run --release --example iso_sink -- DB [--sink sha256|null] [--buf BYTES]
//!
//! DB is a manifest folder filled by `lomob scan --db DB ...`. All not-yet-packed files go
//! into one image (whatever their total size), planned with the same code as
//! `lomob iso create` (`pack::candidates` + `pack::plan`). Nothing is recorded in DB.
//!
//! Sinks: `sha256` (default) hashes the image as the upload path does; `null` only drains
//! the reader (per-file SHA-256 checks inside `ImageReader` still run), to separate the cost
//! of the image hash from the cost of producing the bytes.
//!
//! Prints one JSON line: files, data bytes, image bytes, plan and stream seconds, MB/s.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use lomob::iso::VolumeInfo;
use lomob::manifest::Manifest;
use lomob::pack;
use sha2::{Digest, Sha256};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut db: Option<PathBuf> = None;
    let mut sink = String::from("sha256");
    let mut buf_size: usize = 4 << 20;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sink" => sink = args.next().expect("--sink needs a value"),
            "--buf" => buf_size = args.next().expect("--buf needs a value").parse()?,
            _ if db.is_none() => db = Some(PathBuf::from(a)),
            _ => anyhow::bail!("usage: iso_sink DB [--sink sha256|null] [--buf BYTES]"),
        }
    }
    let db = db.ok_or_else(|| anyhow::anyhow!("usage: iso_sink DB [--sink sha256|null]"))?;
    if sink != "sha256" && sink != "null" {
        anyhow::bail!("--sink must be sha256 or null");
    }

    let t = Instant::now();
    let m = Manifest::open(&db)?;
    let group = pack::candidates(&m)?;
    anyhow::ensure!(!group.is_empty(), "nothing to pack in {}", db.display());
    let plan = pack::plan(
        &group,
        VolumeInfo {
            volume_id: "LOMOB_BENCH".into(),
            created: 1_700_000_000,
        },
    )?;
    drop(m);
    let plan_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (digest, total) = if sink == "sha256" {
        // Exactly what `lomob sync` runs before an upload (two threads).
        let (sha, total) = lomob::pack::stream_image(&plan, |_| Ok(()))?;
        (sha, total)
    } else {
        let mut reader = plan.reader_at(0);
        let mut buf = vec![0u8; buf_size];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        (Sha256::new().finalize().into(), total)
    };
    let digest = hex::encode(digest);
    let stream_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(total == plan.image_size(), "short image: {total} bytes");

    let data: u64 = group.iter().map(|c| c.size).sum();
    println!(
        "{{\"files\":{},\"data_bytes\":{},\"image_bytes\":{},\"sink\":\"{}\",\"plan_secs\":{:.4},\"stream_secs\":{:.4},\"data_mb_per_s\":{:.1},\"image_sha256\":\"{}\"}}",
        group.len(),
        data,
        total,
        sink,
        plan_s,
        stream_s,
        data as f64 / 1e6 / stream_s,
        if sink == "sha256" { digest.as_str() } else { "" },
    );
    Ok(())
}

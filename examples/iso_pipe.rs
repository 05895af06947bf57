//! Prototype for the ISO benchmark analysis (not used by lomob): the same image as
//! `lomob iso create` / `iso_sink`, but produced by a pipeline of threads instead of one
//! loop doing read + per-file SHA-256 + image SHA-256 + write in turn.
//!
//!   cargo run --release --example iso_pipe -- DB (--out FILE [--direct] | --sink)
//!
//! Thread 1 (caller) pulls the image from `ImageReader` (source reads and per-file
//! checks) into recycled 4 MiB buffers; thread 2 hashes the image; thread 3 (with --out)
//! writes it and fsyncs; with --direct it opens the file with O_DIRECT (through one
//! page-aligned bounce buffer; the unaligned tail is written after clearing O_DIRECT), so
//! the image does not go through the page cache. Buffers go round through bounded channels, so memory stays at
//! a few buffers. Prints one JSON line like `iso_sink`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::bounded;
use lomob::iso::VolumeInfo;
use lomob::manifest::Manifest;
use lomob::pack;
use sha2::{Digest, Sha256};

const BUF: usize = 4 << 20;
const BUFS: usize = 6;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: iso_pipe DB (--out FILE | --sink)";
    anyhow::ensure!(args.len() >= 2, "{usage}");
    let db = PathBuf::from(&args[0]);
    let out: Option<PathBuf> = match args[1].as_str() {
        "--out" => Some(PathBuf::from(
            args.get(2).ok_or_else(|| anyhow::anyhow!(usage))?,
        )),
        "--sink" => None,
        _ => anyhow::bail!(usage),
    };
    let direct = args.iter().any(|a| a == "--direct");

    let t = Instant::now();
    let m = Manifest::open(&db)?;
    let group = pack::candidates(&m)?;
    anyhow::ensure!(!group.is_empty(), "nothing to pack");
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
    // Free buffers go back to the reader; filled ones go to the hasher, then the writer.
    let (free_tx, free_rx) = bounded::<Vec<u8>>(BUFS);
    for _ in 0..BUFS {
        free_tx.send(vec![0u8; BUF])?;
    }
    let (hash_tx, hash_rx) = bounded::<(Vec<u8>, usize)>(BUFS);
    let (write_tx, write_rx) = bounded::<(Vec<u8>, usize)>(BUFS);
    let free_tx = Arc::new(free_tx);

    let hasher = {
        let free_tx = free_tx.clone();
        let has_writer = out.is_some();
        std::thread::spawn(move || -> [u8; 32] {
            let mut sha = Sha256::new();
            for (buf, n) in hash_rx {
                sha.update(&buf[..n]);
                if has_writer {
                    let _ = write_tx.send((buf, n));
                } else {
                    let _ = free_tx.send(buf);
                }
            }
            sha.finalize().into()
        })
    };
    let writer = out.clone().map(|path| {
        let free_tx = free_tx.clone();
        std::thread::spawn(move || -> std::io::Result<u64> {
            use std::os::unix::fs::OpenOptionsExt;
            use std::os::unix::io::AsRawFd;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            if direct {
                opts.custom_flags(libc::O_DIRECT);
            }
            let mut f = opts.open(&path)?;
            let layout = std::alloc::Layout::from_size_align(BUF, 4096).expect("layout");
            // SAFETY: non-zero size; freed below with the same layout.
            let bounce_ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!bounce_ptr.is_null());
            // SAFETY: bounce_ptr points to BUF initialised bytes owned by this thread.
            let bounce = unsafe { std::slice::from_raw_parts_mut(bounce_ptr, BUF) };
            let mut total = 0u64;
            for (buf, n) in write_rx {
                if direct {
                    bounce[..n].copy_from_slice(&buf[..n]);
                    let _ = free_tx.send(buf);
                    let aligned = n / 4096 * 4096;
                    f.write_all(&bounce[..aligned])?;
                    if aligned < n {
                        // Last piece: O_DIRECT needs block-sized writes.
                        let fd = f.as_raw_fd();
                        // SAFETY: plain fcntl calls on an open descriptor.
                        unsafe {
                            let fl = libc::fcntl(fd, libc::F_GETFL);
                            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_DIRECT);
                        }
                        f.write_all(&bounce[aligned..n])?;
                    }
                } else {
                    f.write_all(&buf[..n])?;
                    let _ = free_tx.send(buf);
                }
                total += n as u64;
            }
            // SAFETY: allocated above with this layout, no longer used.
            unsafe { std::alloc::dealloc(bounce_ptr, layout) };
            f.sync_all()?;
            Ok(total)
        })
    });
    drop(free_tx);

    let mut reader = plan.reader_at(0);
    let mut total = 0u64;
    loop {
        let mut buf = free_rx.recv()?;
        // Fill the whole buffer (ImageReader hands out at most 1 MiB per read).
        let mut n = 0;
        while n < BUF {
            let k = reader.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        total += n as u64;
        hash_tx.send((buf, n))?;
    }
    drop(hash_tx);
    let digest = hasher.join().expect("hasher thread");
    if let Some(w) = writer {
        let written = w.join().expect("writer thread")?;
        anyhow::ensure!(written == total, "wrote {written} of {total} bytes");
    }
    let stream_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(total == plan.image_size(), "short image: {total} bytes");
    let data: u64 = group.iter().map(|c| c.size).sum();
    println!(
        "{{\"files\":{},\"data_bytes\":{},\"image_bytes\":{},\"mode\":\"{}\",\"plan_secs\":{:.4},\"stream_secs\":{:.4},\"data_mb_per_s\":{:.1},\"image_sha256\":\"{}\"}}",
        group.len(),
        data,
        total,
        if out.is_some() { "file" } else { "sink" },
        plan_s,
        stream_s,
        data as f64 / 1e6 / stream_s,
        hex::encode(digest),
    );
    Ok(())
}

//! `lomob iso create|list|verify|ls|extract`: archive images on the local disk.

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use lomob_backends::ByteSize;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::args::IsoCommand;
use super::output::{self, show, Table};
use super::Context;
use crate::exit;
use crate::iso::{self, IsoImage, VolumeInfo};
use crate::manifest::{IsoRecord, IsoStatus};
use crate::pack::{self, WriteOutcome};

pub fn run(ctx: &Context, cmd: IsoCommand) -> anyhow::Result<u8> {
    match cmd {
        IsoCommand::Create {
            name,
            iso_size,
            out,
        } => create(ctx, name, iso_size, out),
        IsoCommand::List => list(ctx),
        IsoCommand::Verify { image } => verify(ctx, &image),
        IsoCommand::Ls { file } => ls(ctx, &file),
        IsoCommand::Dump { image } => dump(ctx, &image),
        IsoCommand::Extract { file, paths, to } => extract(ctx, &file, &paths, &to),
    }
}

#[derive(Serialize)]
struct Created {
    name: String,
    path: String,
    size: u64,
    files: u64,
    sha256: String,
}

#[derive(Serialize)]
struct LeftOut {
    path: String,
    reason: String,
}

#[derive(Serialize)]
struct CreateReport {
    images: Vec<Created>,
    left_out: Vec<LeftOut>,
}

fn volume_id(name: &str) -> String {
    name.strip_suffix(".iso").unwrap_or(name).to_string()
}

fn create(
    ctx: &Context,
    name: Option<String>,
    iso_size: ByteSize,
    out: Option<PathBuf>,
) -> anyhow::Result<u8> {
    if iso_size.bytes() < 1_000_000 {
        bail!(exit::UsageError(format!(
            "--iso-size {iso_size} is too small: use at least 1MB (5GB is the default)"
        )));
    }
    if let Some(n) = &name {
        if n.contains('/') || n.is_empty() || n.starts_with('.') {
            bail!(exit::UsageError(format!(
                "image name {n:?} must be a plain file name"
            )));
        }
    }
    let m = ctx.open_manifest()?;
    let out_dir = out.unwrap_or_else(|| ctx.config.data_dir.join("isos"));
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create output folder {}", out_dir.display()))?;
    let mut rest: VecDeque<_> = pack::candidates(&m)?.into();
    if rest.is_empty() {
        if !ctx.json {
            println!("nothing to pack: every scanned file is already in an image (run `lomob scan` to find new files)");
        } else {
            output::json(&CreateReport {
                images: vec![],
                left_out: vec![],
            })?;
        }
        return Ok(exit::SUCCESS);
    }
    // Nothing in an image may depend on the clock, so two builds of the same files are the
    // same bytes: its creation time is its newest file's (as a sync does).
    let created = |g: &[pack::Candidate]| g.iter().map(|c| c.mtime).max().unwrap_or(0);
    let mut report = CreateReport {
        images: Vec::new(),
        left_out: Vec::new(),
    };
    let given = name.map(|n| {
        if n.ends_with(".iso") {
            n
        } else {
            format!("{n}.iso")
        }
    });
    let mut made: Vec<String> = Vec::new();
    let recorded: std::collections::HashSet<String> =
        m.isos()?.into_iter().map(|r| r.name).collect();
    let name_for = |group: &[pack::Candidate], made: &[String]| -> anyhow::Result<String> {
        let base = given.clone().unwrap_or_else(|| pack::default_name(group));
        Ok(pack::unique_name(&base, &|n: &str| {
            made.iter().any(|x| x == n) || recorded.contains(n) || out_dir.join(n).exists()
        }))
    };
    loop {
        let next = {
            let made_now = made.clone();
            let vol = |g: &[pack::Candidate]| VolumeInfo {
                volume_id: volume_id(&name_for(g, &made_now).unwrap_or_default()),
                created: created(g),
            };
            pack::next_image(&mut rest, iso_size.bytes(), &vol)?
        };
        let Some((mut group, mut plan)) = next else {
            break;
        };
        loop {
            let name = name_for(&group, &made)?;
            if volume_id(&name) != plan.catalog().volume.volume_id {
                plan = pack::plan(
                    &group,
                    VolumeInfo {
                        volume_id: volume_id(&name),
                        created: created(&group),
                    },
                )?;
            }
            let path = out_dir.join(&name);
            match pack::write_image_file(&plan, &path)? {
                WriteOutcome::Done { size, sha256 } => {
                    let rec = pack::record_image(
                        &m,
                        &pack::ImageToRecord {
                            name: &name,
                            group: &group,
                            plan: &plan,
                            size,
                            sha256,
                            local_path: Some(&path),
                            upload: None,
                        },
                    )?;
                    tracing::info!(
                        "wrote {} ({}, {} files)",
                        path.display(),
                        ByteSize(size),
                        rec.files
                    );
                    made.push(name.clone());
                    report.images.push(Created {
                        name,
                        path: path.display().to_string(),
                        size,
                        files: rec.files,
                        sha256: hex::encode(sha256),
                    });
                    break;
                }
                WriteOutcome::SourceChanged { image_path, reason } => {
                    // Leave the file out of this image; the next scan records its new
                    // content and a later image takes it.
                    let before = group.len();
                    group.retain(|c| show(&c.image_path) != image_path);
                    report.left_out.push(LeftOut {
                        path: format!("/{image_path}"),
                        reason: format!("{reason}; run `lomob scan` and pack again"),
                    });
                    if group.is_empty() || group.len() == before {
                        break;
                    }
                    plan = pack::plan(
                        &group,
                        VolumeInfo {
                            volume_id: volume_id(&name_for(&group, &made)?),
                            created: created(&group),
                        },
                    )?;
                }
            }
        }
    }
    if ctx.json {
        output::json(&report)?;
    } else {
        let mut t = Table::new(&["NAME", "SIZE", "FILES", "PATH"]).right(&[1, 2]);
        for i in &report.images {
            t.row(vec![
                i.name.clone(),
                ByteSize(i.size).to_string(),
                i.files.to_string(),
                i.path.clone(),
            ]);
        }
        t.print(&mut super::output::stdout())?;
        if !report.left_out.is_empty() {
            eprintln!(
                "left out {} file(s) that changed since the scan:",
                report.left_out.len()
            );
            for l in &report.left_out {
                eprintln!("  {}: {}", l.path, l.reason);
            }
        }
    }
    Ok(if report.left_out.is_empty() {
        exit::SUCCESS
    } else {
        exit::PARTIAL
    })
}

fn status_text(r: &IsoRecord) -> String {
    match r.status {
        IsoStatus::Created => "Created, not uploaded".into(),
        IsoStatus::Uploaded => format!(
            "Uploaded to {}",
            r.uploads
                .iter()
                .map(|u| u.site.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[derive(Serialize)]
struct IsoRow {
    id: u32,
    name: String,
    size: u64,
    status: String,
    region: String,
    bucket: String,
    files: u64,
    created: String,
    sha256: String,
    local_path: Option<String>,
}

fn list(ctx: &Context) -> anyhow::Result<u8> {
    let m = ctx.open_manifest()?;
    let rows: Vec<IsoRow> = m
        .isos()?
        .into_iter()
        .map(|r| IsoRow {
            id: r.id,
            name: r.name.clone(),
            size: r.size,
            status: status_text(&r),
            region: r
                .uploads
                .first()
                .map(|u| u.region.clone())
                .unwrap_or_default(),
            bucket: r
                .uploads
                .first()
                .map(|u| u.bucket.clone())
                .unwrap_or_default(),
            files: r.files,
            created: output::rfc3339(r.created),
            sha256: hex::encode(r.sha256),
            local_path: r.local_path.as_deref().map(show),
        })
        .collect();
    if ctx.json {
        output::json(&rows)?;
        return Ok(exit::SUCCESS);
    }
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "SIZE",
        "STATUS",
        "REGION",
        "BUCKET",
        "FILES COUNT",
        "CREATE TIME",
        "HASH",
    ])
    .right(&[0, 2, 6]);
    for r in &rows {
        t.row(vec![
            r.id.to_string(),
            r.name.clone(),
            ByteSize(r.size).to_string(),
            r.status.clone(),
            r.region.clone(),
            r.bucket.clone(),
            r.files.to_string(),
            r.created.replace('T', " "),
            r.sha256.clone(),
        ]);
    }
    t.print(&mut super::output::stdout())?;
    Ok(exit::SUCCESS)
}

fn open_image(path: &Path) -> anyhow::Result<IsoImage<BufReader<std::fs::File>>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    IsoImage::open(BufReader::with_capacity(1 << 20, f))
        .with_context(|| format!("{} is not a readable ISO 9660 image", path.display()))
}

#[derive(Serialize)]
struct VerifyOut {
    image: String,
    checked: usize,
    ok: usize,
    problems: Vec<String>,
    image_sha256_matches_manifest: Option<bool>,
}

fn verify(ctx: &Context, image: &str) -> anyhow::Result<u8> {
    let m = ctx.open_manifest()?;
    let as_path = Path::new(image);
    let (path, record) = if as_path.is_file() {
        let canon = std::fs::canonicalize(as_path)?;
        let rec = m.isos()?.into_iter().find(|r| {
            r.local_path.as_deref() == Some(&*crate::platform::names::path_bytes(&canon))
                || as_path.file_name().and_then(|n| n.to_str()) == Some(r.name.as_str())
        });
        (as_path.to_path_buf(), rec)
    } else {
        let Some(rec) = m.iso_by_name(image)? else {
            bail!(exit::UsageError(format!(
                "{image:?} is neither an image file nor the name of an image in the manifest (see `lomob iso list`)"
            )));
        };
        let Some(p) = rec.local_path.as_deref() else {
            bail!("image {image} has no local copy to verify");
        };
        let p = crate::platform::names::path_of(p);
        if !p.is_file() {
            bail!("image {image}: its local copy {} is gone", p.display());
        }
        (p, Some(rec))
    };
    let mut img = open_image(&path)?;
    let rep = iso::verify(&mut img)?;
    let mut problems: Vec<String> = rep
        .mismatches
        .iter()
        .map(|x| format!("{}: {}", show(&x.path), x.reason))
        .collect();
    problems.extend(
        rep.missing
            .iter()
            .map(|p| format!("{}: in the catalog but not in the image", show(p))),
    );
    problems.extend(
        rep.unexpected
            .iter()
            .map(|p| format!("{}: in the image but not in the catalog", show(p))),
    );
    let mut whole = None;
    if let Some(rec) = &record {
        // The manifest's view: every content placed in this image must be in the catalog at
        // the recorded offset with the recorded SHA-256.
        let catalog_files = img.catalog()?.map(|c| c.files).unwrap_or_default();
        let by_path: std::collections::HashMap<Vec<u8>, &iso::CatalogFile> = catalog_files
            .iter()
            .filter_map(|f| f.raw_path().map(|p| (p, f)))
            .collect();
        for kv in m.placements() {
            let (content, iso_id, p) = kv?;
            if iso_id != rec.id {
                continue;
            }
            let want = m.content(&content)?.map(|c| c.sha256);
            match by_path.get(&p.path) {
                None => problems.push(format!(
                    "{}: the manifest places it in this image, but the catalog lacks it",
                    show(&p.path)
                )),
                Some(f) => {
                    if f.offset != p.offset {
                        problems.push(format!(
                            "{}: offset {} in the catalog, {} in the manifest",
                            show(&p.path),
                            f.offset,
                            p.offset
                        ));
                    }
                    if f.sha256_bytes() != want {
                        problems.push(format!(
                            "{}: SHA-256 differs from the manifest",
                            show(&p.path)
                        ));
                    }
                }
            }
        }
        let mut f = std::fs::File::open(&path)?;
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
        }
        let ok = <[u8; 32]>::from(sha.finalize()) == rec.sha256;
        if !ok {
            problems
                .push("the image's SHA-256 differs from the one recorded when it was made".into());
        }
        whole = Some(ok);
    }
    let out = VerifyOut {
        image: path.display().to_string(),
        checked: rep.checked,
        ok: rep.ok,
        problems,
        image_sha256_matches_manifest: whole,
    };
    if ctx.json {
        output::json(&out)?;
    } else if out.problems.is_empty() {
        println!(
            "{}: all {} files match the catalog{}",
            out.image,
            out.checked,
            if whole.is_some() {
                " and the manifest; image SHA-256 matches"
            } else {
                " (image not in this manifest: checked against its own catalog only)"
            }
        );
    } else {
        let mut err = super::output::stderr();
        writeln!(err, "{}: {} problem(s):", out.image, out.problems.len())?;
        for p in &out.problems {
            writeln!(err, "  {p}")?;
        }
    }
    Ok(if out.problems.is_empty() {
        exit::SUCCESS
    } else {
        exit::FAILURE
    })
}

#[derive(Serialize)]
struct LsRow {
    path: String,
    dir: bool,
    size: u64,
    mtime: String,
}

fn ls(ctx: &Context, file: &Path) -> anyhow::Result<u8> {
    let img = open_image(file)?;
    let rows: Vec<LsRow> = img
        .entries()?
        .into_iter()
        .map(|e| LsRow {
            path: show(&e.path),
            dir: e.is_dir,
            size: e.size,
            mtime: output::rfc3339(e.mtime),
        })
        .collect();
    if ctx.json {
        output::json(&rows)?;
        return Ok(exit::SUCCESS);
    }
    let mut t = Table::new(&["SIZE", "MODIFIED", "PATH"]).right(&[0]);
    for r in rows.iter().filter(|r| !r.dir) {
        t.row(vec![
            ByteSize(r.size).to_string(),
            r.mtime.get(..16).unwrap_or(&r.mtime).replace('T', " "),
            r.path.clone(),
        ]);
    }
    t.print(&mut super::output::stdout())?;
    Ok(exit::SUCCESS)
}

#[derive(Serialize)]
struct DumpRow {
    path: String,
    dir: bool,
    /// A file's size; a folder's is the sum of the files under it.
    size: u64,
}

/// Every entry of an image file: (path, is a folder, size).
fn image_entries(file: &Path) -> anyhow::Result<Vec<(Vec<u8>, bool, u64)>> {
    Ok(open_image(file)?
        .entries()?
        .into_iter()
        .map(|e| (e.path, e.is_dir, e.size))
        .collect())
}

/// `lomob iso dump NAME|FILE`: the image as a tree, each file with its size and each folder
/// with the total under it.
fn dump(ctx: &Context, image: &str) -> anyhow::Result<u8> {
    let as_path = Path::new(image);
    let (title, entries): (String, Vec<(Vec<u8>, bool, u64)>) = if as_path.is_file() {
        (as_path.display().to_string(), image_entries(as_path)?)
    } else {
        let m = ctx.open_manifest()?;
        let Some(rec) = m.iso_by_name(image)? else {
            bail!(exit::UsageError(format!(
                "{image:?} is neither an image file nor the name of an image in the manifest (see `lomob iso list`)"
            )));
        };
        let local = rec
            .local_path
            .as_deref()
            .map(crate::platform::names::path_of)
            .filter(|p| p.is_file());
        match local {
            Some(p) => (rec.name.clone(), image_entries(&p)?),
            None => {
                // The manifest knows where each file sits in the image.
                let mut e = Vec::new();
                for kv in m.placements() {
                    let (content, iso, p) = kv?;
                    if iso != rec.id {
                        continue;
                    }
                    let size = m.content(&content)?.map_or(0, |c| c.size);
                    e.push((p.path, false, size));
                }
                (format!("{} (from the manifest)", rec.name), e)
            }
        }
    };
    let mut rows: Vec<DumpRow> = Vec::new();
    let mut tree = super::tree::Node::default();
    let mut sizes: std::collections::BTreeMap<Vec<u8>, (bool, u64)> = Default::default();
    for (path, dir, size) in &entries {
        let path: Vec<u8> = path.strip_prefix(b"/").unwrap_or(path).to_vec();
        if path.is_empty() {
            continue;
        }
        sizes.entry(path.clone()).or_insert((*dir, 0)).1 += if *dir { 0 } else { *size };
        if !dir {
            // Every folder above a file counts its size.
            let mut up = path.clone();
            while let Some(i) = up.iter().rposition(|&b| b == b'/') {
                up.truncate(i);
                sizes.entry(up.clone()).or_insert((true, 0)).1 += size;
            }
        }
    }
    let total: u64 = entries.iter().filter(|e| !e.1).map(|e| e.2).sum();
    for (path, (dir, size)) in &sizes {
        let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        tree.at(&parts).label = ByteSize(*size).to_string();
        rows.push(DumpRow {
            path: show(path),
            dir: *dir,
            size: *size,
        });
    }
    if ctx.json {
        output::json(&rows)?;
        return Ok(exit::SUCCESS);
    }
    let files = rows.iter().filter(|r| !r.dir).count();
    let mut out = super::output::stdout();
    super::tree::print(&mut out, &title, &tree)?;
    writeln!(
        out,
        "\n{} folders, {files} files, {}",
        rows.len() - files,
        ByteSize(total)
    )?;
    Ok(exit::SUCCESS)
}

fn extract(ctx: &Context, file: &Path, paths: &[String], to: &Path) -> anyhow::Result<u8> {
    let mut img = open_image(file)?;
    let rep = if paths.is_empty() {
        iso::extract_all(&mut img, to)?
    } else {
        let wanted: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| {
                p.trim_start_matches('/')
                    .trim_end_matches('/')
                    .as_bytes()
                    .to_vec()
            })
            .collect();
        iso::extract_paths(&mut img, &wanted, to)?
    };
    #[derive(Serialize)]
    struct Out {
        files: usize,
        dirs: usize,
        bytes: u64,
        skipped: Vec<(String, String)>,
    }
    let out = Out {
        files: rep.files,
        dirs: rep.dirs,
        bytes: rep.bytes,
        skipped: rep
            .skipped
            .iter()
            .map(|(p, r)| (show(p), r.clone()))
            .collect(),
    };
    if ctx.json {
        output::json(&out)?;
    } else {
        println!(
            "extracted {} files ({}) into {}",
            out.files,
            ByteSize(out.bytes),
            to.display()
        );
        for (p, r) in &out.skipped {
            eprintln!("  skipped {p}: {r}");
        }
    }
    Ok(if out.skipped.is_empty() {
        exit::SUCCESS
    } else {
        exit::PARTIAL
    })
}

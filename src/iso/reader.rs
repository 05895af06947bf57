//! Parsing ISO 9660 images: ours, and those of xorriso / genisoimage / mkisofs.
//!
//! Names come from Rock Ridge when the primary tree carries it (SP in the root's "."
//! record), else from the Joliet tree, else from plain ISO 9660 identifiers without ";1".
//! Multi-extent files are gathered into one [`Entry`] with all their extents; Rock Ridge
//! relocated directories (CL/RE, as genisoimage writes for deep trees) are followed.
//!
//! The input may be hostile: every length is bounds-checked against the record, the sector
//! and the image; directories are capped in size and visited once (cycles); continuation
//! chains, depth, path lengths and the total of path bytes are capped. Errors are
//! [`IsoError::Malformed`] with a byte offset; nothing here panics on bad input.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};

use super::catalog::{Catalog, CATALOG_PATH};
use super::error::{lossy, IsoError};
use super::joliet;
use super::records::{get_u32_le, parse_dir_date, su_offset, FLAG_DIR, FLAG_MULTI_EXTENT, SECTOR};
use super::rockridge::{self, RrInfo, S_IFLNK, S_IFMT};

/// Largest directory extent we accept (50,000 entries need about 12 MiB).
const MAX_DIR_BYTES: u64 = 64 << 20;
/// Largest continuation area and longest CE chain followed for one record.
const MAX_CE_BYTES: u32 = 64 << 10;
const MAX_CE_HOPS: usize = 32;
/// Deepest directory nesting and longest path accepted.
const MAX_DEPTH: usize = 512;
const MAX_PATH: usize = 16 << 10;
/// Cap on the sum of all path lengths (keeps memory bounded for hostile images).
const MAX_TOTAL_PATH_BYTES: usize = 512 << 20;
/// Cap on all directory bytes read by one `entries()` (hostile images can declare many
/// overlapping directories).
const MAX_TOTAL_DIR_BYTES: u64 = 1 << 30;
/// Largest catalog read into memory.
const MAX_CATALOG: u64 = 1 << 30;
/// Volume descriptors scanned before giving up on finding a terminator.
const MAX_DESCRIPTORS: u64 = 64;

/// One contiguous piece of a file's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Logical block (2048 bytes) where the data starts.
    pub lba: u32,
    pub len: u32,
}

/// A file or directory found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full path, '/'-separated, no leading '/', raw bytes.
    pub path: Vec<u8>,
    pub is_dir: bool,
    /// Total size of the data (sum of the extents).
    pub size: u64,
    /// Modification time, unix seconds (Rock Ridge TF if present, else the record date).
    pub mtime: i64,
    /// POSIX mode from Rock Ridge PX, when present (type bits included).
    pub mode: Option<u32>,
    /// Data extents in order (several for multi-extent files; empty for directories).
    pub extents: Vec<Extent>,
}

impl Entry {
    /// True for Rock Ridge symbolic links (never followed or created by extraction).
    pub fn is_symlink(&self) -> bool {
        self.mode.is_some_and(|m| m & S_IFMT == S_IFLNK)
    }

    /// Byte offset of the first data byte in the image, if the file has data.
    pub fn data_offset(&self) -> Option<u64> {
        self.extents
            .iter()
            .find(|e| e.len > 0)
            .map(|e| e.lba as u64 * SECTOR)
    }
}

/// Which tree names are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    RockRidge,
    Joliet,
    Iso9660,
}

/// An opened image.
pub struct IsoImage<R: Read + Seek> {
    r: RefCell<R>,
    len: u64,
    primary_root: (u32, u32),
    joliet_root: Option<(u32, u32)>,
    /// Rock Ridge detected: bytes to skip at the start of each system use area.
    rr_skip: Option<u8>,
    volume_id: String,
}

struct Rec {
    flags: u8,
    lba: u32,
    size: u32,
    date: Option<i64>,
    name: Vec<u8>,
    /// Offset of the record in the image (for messages).
    at: u64,
    rr: RrInfo,
}

impl<R: Read + Seek> IsoImage<R> {
    /// Opens an image: reads the volume descriptors and detects Rock Ridge and Joliet.
    pub fn open(mut r: R) -> Result<Self, IsoError> {
        let len = r.seek(SeekFrom::End(0)).map_err(|e| IsoError::ImageIo {
            offset: 0,
            source: e,
        })?;
        if len < 17 * SECTOR {
            return Err(IsoError::malformed(
                "too small to be an ISO 9660 image",
                len,
            ));
        }
        let mut img = IsoImage {
            r: RefCell::new(r),
            len,
            primary_root: (0, 0),
            joliet_root: None,
            rr_skip: None,
            volume_id: String::new(),
        };
        let mut primary = None;
        for i in 0..MAX_DESCRIPTORS {
            let at = (16 + i) * SECTOR;
            if at + SECTOR > len {
                break;
            }
            let vd = img.read_at(at, SECTOR as usize)?;
            if &vd[1..6] != b"CD001" {
                break;
            }
            let root = || -> Result<(u32, u32), IsoError> {
                if get_u16(&vd, 128) != Some(SECTOR as u16) {
                    return Err(IsoError::malformed(
                        "logical block size is not 2048",
                        at + 128,
                    ));
                }
                let lba = get_u32_le(&vd, 156 + 2).unwrap_or(0);
                let size = get_u32_le(&vd, 156 + 10).unwrap_or(0);
                Ok((lba, size))
            };
            match vd[0] {
                1 if primary.is_none() => {
                    primary = Some(root()?);
                    img.volume_id = String::from_utf8_lossy(&vd[40..72]).trim_end().to_string();
                }
                2 if img.joliet_root.is_none()
                    && vd[88] == b'%'
                    && vd[89] == b'/'
                    && matches!(vd[90], b'@' | b'C' | b'E') =>
                {
                    img.joliet_root = Some(root()?);
                }
                255 => break,
                _ => {}
            }
        }
        img.primary_root = primary
            .ok_or_else(|| IsoError::malformed("no primary volume descriptor", 16 * SECTOR))?;
        img.check_dir_extent(img.primary_root, 16 * SECTOR + 156)?;
        // Rock Ridge: SP entry at the start of the system use area of the root's "." record.
        let (lba, _) = img.primary_root;
        let first = img.read_at(
            lba as u64 * SECTOR,
            255.min((img.len - lba as u64 * SECTOR) as usize),
        )?;
        if let Some(rec) = parse_record(&first, 0, lba as u64 * SECTOR)? {
            let su_start = su_offset(rec.name_len);
            if su_start < rec.len {
                let mut info = RrInfo::default();
                rockridge::parse_area(&first[su_start..rec.len], &mut info);
                img.rr_skip = info.sp_skip;
            }
        }
        Ok(img)
    }

    /// Volume identifier from the primary descriptor.
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// Where [`IsoImage::entries`] takes names from.
    pub fn name_source(&self) -> NameSource {
        if self.rr_skip.is_some() {
            NameSource::RockRidge
        } else if self.joliet_root.is_some() {
            NameSource::Joliet
        } else {
            NameSource::Iso9660
        }
    }

    /// Size of the image in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn read_at(&self, offset: u64, n: usize) -> Result<Vec<u8>, IsoError> {
        if offset
            .checked_add(n as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(IsoError::malformed(
                format!("read of {n} bytes beyond the end of the image"),
                offset,
            ));
        }
        let mut buf = vec![0u8; n];
        let mut r = self.r.borrow_mut();
        r.seek(SeekFrom::Start(offset))
            .and_then(|_| r.read_exact(&mut buf))
            .map_err(|e| IsoError::ImageIo { offset, source: e })?;
        Ok(buf)
    }

    fn check_dir_extent(&self, (lba, size): (u32, u32), at: u64) -> Result<(), IsoError> {
        let start = lba as u64 * SECTOR;
        if lba < 16 || start + size as u64 > self.len || size as u64 > MAX_DIR_BYTES {
            return Err(IsoError::malformed(
                format!("directory extent {lba} of {size} bytes is out of bounds"),
                at,
            ));
        }
        Ok(())
    }

    /// Every file and directory of the image, depth first, directory order.
    pub fn entries(&self) -> Result<Vec<Entry>, IsoError> {
        let source = self.name_source();
        let root = if source == NameSource::Joliet {
            self.joliet_root.unwrap_or(self.primary_root)
        } else {
            self.primary_root
        };
        self.check_dir_extent(root, 16 * SECTOR)?;
        let mut out = Vec::new();
        let mut visited: HashSet<u32> = HashSet::new();
        let mut total_path = 0usize;
        let mut total_dir = 0u64;
        // (extent, path prefix, depth); processed depth first.
        let mut stack: Vec<((u32, u32), Vec<u8>, usize)> = vec![(root, Vec::new(), 0)];
        visited.insert(root.0);
        while let Some((dir, prefix, depth)) = stack.pop() {
            total_dir += dir.1 as u64;
            if total_dir > MAX_TOTAL_DIR_BYTES {
                return Err(IsoError::malformed(
                    "directories too large in total",
                    dir.0 as u64 * SECTOR,
                ));
            }
            let recs = self.read_dir(dir, source)?;
            let mut children = Vec::new();
            let mut pending: Option<Entry> = None;
            for rec in recs {
                if rec.rr.relocated {
                    continue; // shown where its CL placeholder is
                }
                let name = if source == NameSource::RockRidge {
                    rec.rr.name.clone().unwrap_or_else(|| iso_name(&rec.name))
                } else if source == NameSource::Joliet {
                    joliet::decode(&rec.name)
                } else {
                    iso_name(&rec.name)
                };
                let mut path = prefix.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&name);
                if path.len() > MAX_PATH {
                    return Err(IsoError::malformed("path too long", rec.at));
                }
                let mtime = rec.rr.mtime.or(rec.date).unwrap_or(0);
                let is_dir = rec.flags & FLAG_DIR != 0 || rec.rr.child_link.is_some();
                if is_dir {
                    if let Some(p) = pending.take() {
                        out.push(p);
                    }
                    let mut ext = (rec.lba, rec.size);
                    if let Some(cl) = rec.rr.child_link {
                        ext = self.relocated_extent(cl, rec.at)?;
                    }
                    total_path += path.len();
                    out.push(Entry {
                        path: path.clone(),
                        is_dir: true,
                        size: 0,
                        mtime,
                        mode: rec.rr.mode,
                        extents: Vec::new(),
                    });
                    if depth + 1 > MAX_DEPTH {
                        return Err(IsoError::malformed("directories nested too deep", rec.at));
                    }
                    if visited.insert(ext.0) {
                        self.check_dir_extent(ext, rec.at)?;
                        children.push((ext, path, depth + 1));
                    }
                } else {
                    let extent = Extent {
                        lba: rec.lba,
                        len: rec.size,
                    };
                    match pending.as_mut() {
                        Some(p) if p.path == path => {
                            p.extents.push(extent);
                            p.size += rec.size as u64;
                        }
                        _ => {
                            if let Some(p) = pending.take() {
                                out.push(p);
                            }
                            total_path += path.len();
                            pending = Some(Entry {
                                path,
                                is_dir: false,
                                size: rec.size as u64,
                                mtime,
                                mode: rec.rr.mode,
                                extents: vec![extent],
                            });
                        }
                    }
                    if rec.flags & FLAG_MULTI_EXTENT == 0 {
                        if let Some(p) = pending.take() {
                            out.push(p);
                        }
                    }
                }
                if total_path > MAX_TOTAL_PATH_BYTES {
                    return Err(IsoError::malformed("too many or too long paths", rec.at));
                }
            }
            if let Some(p) = pending.take() {
                out.push(p);
            }
            // Reverse so that the first child directory is processed first.
            stack.extend(children.into_iter().rev());
        }
        Ok(out)
    }

    /// Extent of a relocated directory: the "." record at the start of block `lba`.
    fn relocated_extent(&self, lba: u32, at: u64) -> Result<(u32, u32), IsoError> {
        let start = lba as u64 * SECTOR;
        if start + 34 > self.len {
            return Err(IsoError::malformed("CL points beyond the image", at));
        }
        let n = 255.min((self.len - start) as usize);
        let buf = self.read_at(start, n)?;
        match parse_record(&buf, 0, start)? {
            Some(r) => Ok((r.lba, r.size)),
            None => Err(IsoError::malformed("CL points at no directory", at)),
        }
    }

    /// Parses the records of one directory, skipping "." and "..".
    fn read_dir(&self, (lba, size): (u32, u32), source: NameSource) -> Result<Vec<Rec>, IsoError> {
        let base = lba as u64 * SECTOR;
        let buf = self.read_at(base, size as usize)?;
        let mut recs = Vec::new();
        let mut i = 0usize;
        while i < buf.len() {
            let Some(raw) = parse_record(&buf, i, base)? else {
                // Zero length: rest of the sector is padding.
                i = (i / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            };
            let at = base + i as u64;
            let rec_bytes = &buf[i..i + raw.len];
            i += raw.len;
            let name = rec_bytes[33..33 + raw.name_len].to_vec();
            if raw.name_len == 1 && (name[0] == 0 || name[0] == 1) {
                continue;
            }
            let mut rr = RrInfo::default();
            if source == NameSource::RockRidge {
                let skip = self.rr_skip.unwrap_or(0) as usize;
                let su_start = su_offset(raw.name_len) + skip;
                if su_start < raw.len {
                    let mut ce = rockridge::parse_area(&rec_bytes[su_start..], &mut rr);
                    let mut hops = 0;
                    while let Some((block, off, len)) = ce.take() {
                        hops += 1;
                        if hops > MAX_CE_HOPS || len > MAX_CE_BYTES {
                            break;
                        }
                        let start = block as u64 * SECTOR + off as u64;
                        if start + len as u64 > self.len {
                            break; // optional data: ignore a bad pointer
                        }
                        let area = self.read_at(start, len as usize)?;
                        ce = rockridge::parse_area(&area, &mut rr);
                    }
                }
            }
            recs.push(Rec {
                flags: raw.flags,
                lba: raw.lba,
                size: raw.size,
                date: parse_dir_date(&rec_bytes[18..25]),
                name,
                at,
                rr,
            });
        }
        Ok(recs)
    }

    /// Copies a file's data to `out`; returns the number of bytes written.
    pub fn read_file(&mut self, entry: &Entry, out: &mut dyn Write) -> Result<u64, IsoError> {
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for e in &entry.extents {
            let mut at = e.lba as u64 * SECTOR;
            if e.len > 0 && at + e.len as u64 > self.len {
                return Err(IsoError::malformed(
                    format!("extent of {} goes beyond the image", lossy(&entry.path)),
                    at,
                ));
            }
            let mut left = e.len as u64;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                {
                    let mut r = self.r.borrow_mut();
                    r.seek(SeekFrom::Start(at))
                        .and_then(|_| r.read_exact(&mut buf[..n]))
                        .map_err(|e| IsoError::ImageIo {
                            offset: at,
                            source: e,
                        })?;
                }
                out.write_all(&buf[..n]).map_err(|e| IsoError::Io {
                    path: lossy(&entry.path).into(),
                    source: e,
                })?;
                at += n as u64;
                left -= n as u64;
                total += n as u64;
            }
        }
        Ok(total)
    }

    /// Looks an entry up by its full path.
    pub fn find(&self, path: &[u8]) -> Result<Option<Entry>, IsoError> {
        Ok(self.entries()?.into_iter().find(|e| e.path == path))
    }

    /// The lomob catalog (`LOMOB/CATALOG.JSON`), if the image has one.
    pub fn catalog(&mut self) -> Result<Option<Catalog>, IsoError> {
        let Some(e) = self.find(CATALOG_PATH)? else {
            return Ok(None);
        };
        if e.is_dir || e.size > MAX_CATALOG {
            return Err(IsoError::Catalog(
                "catalog entry is not a reasonable file".into(),
            ));
        }
        let mut bytes = Vec::with_capacity(e.size as usize);
        self.read_file(&e, &mut bytes)?;
        Catalog::from_json(&bytes).map(Some)
    }
}

fn get_u16(buf: &[u8], at: usize) -> Option<u16> {
    super::records::get_u16_le(buf, at)
}

/// The fixed part of a directory record.
struct RawRec {
    len: usize,
    name_len: usize,
    flags: u8,
    lba: u32,
    size: u32,
}

/// Parses the record at `buf[i..]`; `None` for a zero length byte (sector padding).
fn parse_record(buf: &[u8], i: usize, base: u64) -> Result<Option<RawRec>, IsoError> {
    let at = base + i as u64;
    let Some(&len) = buf.get(i) else {
        return Ok(None);
    };
    let len = len as usize;
    if len == 0 {
        return Ok(None);
    }
    if len < 34 || i + len > buf.len() {
        return Err(IsoError::malformed(
            format!("bad directory record length {len}"),
            at,
        ));
    }
    let name_len = buf[i + 32] as usize;
    if name_len == 0 || 33 + name_len > len {
        return Err(IsoError::malformed(
            format!("bad identifier length {name_len}"),
            at,
        ));
    }
    let r = &buf[i..i + len];
    Ok(Some(RawRec {
        len,
        name_len,
        flags: r[25],
        lba: get_u32_le(r, 2).unwrap_or(0),
        size: get_u32_le(r, 10).unwrap_or(0),
    }))
}

/// Plain ISO 9660 name: without the ";1" version and a trailing dot.
fn iso_name(id: &[u8]) -> Vec<u8> {
    let mut n = id;
    if let Some(p) = n.iter().rposition(|&b| b == b';') {
        n = &n[..p];
    }
    if n.len() > 1 && n.ends_with(b".") {
        n = &n[..n.len() - 1];
    }
    n.to_vec()
}

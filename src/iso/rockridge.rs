//! Rock Ridge (RRIP 1.10, "RRIP_1991A") on top of SUSP (IEEE P1281): building the System Use
//! entries we write (SP, ER, PX, TF, NM, CE) and parsing the ones readers meet.
//!
//! Rock Ridge is what carries the real names (up to 255 raw bytes, any encoding), POSIX mode
//! bits and modification times; the ISO 9660 names are only a mangled fallback. A directory
//! record is at most 255 bytes, so when the entries do not fit in the record they continue in
//! a "continuation area" pointed to by a CE entry; [`pack`] makes that split.

use super::records::{dir_date, parse_dir_date, put_u32_both};

/// Identifier of the Rock Ridge extension in the ER entry (RRIP 1.10, what mkisofs and
/// xorriso write and what every reader recognises).
pub const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DES: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SRC: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// Size of a CE entry.
pub const CE_LEN: usize = 28;
/// Largest payload of one NM entry (entry length is one byte; 5 header bytes).
const NM_MAX_PAYLOAD: usize = 250;

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFMT: u32 = 0o170000;

fn header(sig: &[u8; 2], len: usize) -> Vec<u8> {
    let mut e = Vec::with_capacity(len);
    e.extend_from_slice(sig);
    e.push(len as u8);
    e.push(1); // entry version
    e
}

/// SP: marks the use of SUSP; must be the first entry of the root's "." record.
pub fn sp() -> Vec<u8> {
    let mut e = header(b"SP", 7);
    e.extend_from_slice(&[0xBE, 0xEF, 0]);
    e
}

/// ER: names the extension in use (Rock Ridge).
pub fn er() -> Vec<u8> {
    let len = 8 + ER_ID.len() + ER_DES.len() + ER_SRC.len();
    let mut e = header(b"ER", len);
    e.push(ER_ID.len() as u8);
    e.push(ER_DES.len() as u8);
    e.push(ER_SRC.len() as u8);
    e.push(1); // extension version
    e.extend_from_slice(ER_ID);
    e.extend_from_slice(ER_DES);
    e.extend_from_slice(ER_SRC);
    e
}

/// PX: POSIX mode, link count, uid, gid (RRIP 1.10 form, 36 bytes, no serial number: this is
/// the form that matches the "RRIP_1991A" identifier; xorriso writes the same).
pub fn px(mode: u32, nlink: u32) -> Vec<u8> {
    let mut e = header(b"PX", 36);
    put_u32_both(&mut e, mode);
    put_u32_both(&mut e, nlink);
    put_u32_both(&mut e, 0); // uid: ownership is not preserved (root on extraction)
    put_u32_both(&mut e, 0); // gid
    e
}

/// TF: modification, access and attribute-change times, short (7-byte) form.
pub fn tf(mtime: i64) -> Vec<u8> {
    let mut e = header(b"TF", 5 + 3 * 7);
    e.push(0x0E); // MODIFY | ACCESS | ATTRIBUTES
    for _ in 0..3 {
        e.extend_from_slice(&dir_date(mtime));
    }
    e
}

/// NM entries for a name, split into pieces that each fit one entry (CONTINUE flag on all
/// pieces but the last), because a 255-byte name does not fit one 255-byte entry.
pub fn nm(name: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunks = name.chunks(NM_MAX_PAYLOAD).peekable();
    while let Some(chunk) = chunks.next() {
        let mut e = header(b"NM", 5 + chunk.len());
        e.push(if chunks.peek().is_some() { 1 } else { 0 });
        e.extend_from_slice(chunk);
        out.push(e);
    }
    out
}

/// CE: continuation area at `block`, byte `offset` inside it, `len` bytes.
pub fn ce(block: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut e = header(b"CE", CE_LEN);
    put_u32_both(&mut e, block);
    put_u32_both(&mut e, offset);
    put_u32_both(&mut e, len);
    e
}

/// System use entries split between the directory record and a continuation area.
#[derive(Debug, Clone, Default)]
pub struct PackedSu {
    /// Entries stored in the record itself, CE entry not included.
    pub inline: Vec<u8>,
    /// Entries stored in the continuation area (empty: no CE entry needed).
    pub cont: Vec<u8>,
}

impl PackedSu {
    /// Length of the system use area in the record, CE entry included.
    pub fn inline_len(&self) -> usize {
        self.inline.len() + if self.cont.is_empty() { 0 } else { CE_LEN }
    }
}

/// Splits `entries` (in order) between the record (at most `budget` bytes) and a
/// continuation area. Entries are never split; once one does not fit, it and all later ones go
/// to the continuation area so that multi-piece NM entries stay in order.
pub fn pack(entries: &[Vec<u8>], budget: usize) -> PackedSu {
    let total: usize = entries.iter().map(Vec::len).sum();
    let mut p = PackedSu::default();
    if total <= budget {
        for e in entries {
            p.inline.extend_from_slice(e);
        }
        return p;
    }
    let mut spilled = false;
    for e in entries {
        if !spilled && p.inline.len() + e.len() + CE_LEN <= budget {
            p.inline.extend_from_slice(e);
        } else {
            spilled = true;
            p.cont.extend_from_slice(e);
        }
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/// What the reader gathers from the system use entries of one record.
#[derive(Debug, Default, Clone)]
pub struct RrInfo {
    pub name: Option<Vec<u8>>,
    /// NM said "this piece continues": more NM pieces expected.
    pub name_continues: bool,
    pub mode: Option<u32>,
    pub mtime: Option<i64>,
    /// CL: this record is a placeholder for a relocated directory at this block.
    pub child_link: Option<u32>,
    /// RE: this record is the relocated directory itself (hidden at this place).
    pub relocated: bool,
    /// SP found (only meaningful for the root's "." record): bytes to skip in every record.
    pub sp_skip: Option<u8>,
}

/// Cap on a name assembled from NM pieces (a hostile CE chain could otherwise grow it).
const MAX_NAME: usize = 4096;

/// Parses one system use area. Returns the CE pointer (block, offset, length) if one is found.
/// Malformed entries end the parse quietly: Rock Ridge is an optional layer.
pub fn parse_area(area: &[u8], info: &mut RrInfo) -> Option<(u32, u32, u32)> {
    let mut ce_ptr = None;
    let mut i = 0usize;
    while i + 4 <= area.len() {
        let sig = [area[i], area[i + 1]];
        let len = area[i + 2] as usize;
        if len < 4 || i + len > area.len() {
            break;
        }
        let e = &area[i..i + len];
        match &sig {
            b"SP" if len >= 7 && e[4] == 0xBE && e[5] == 0xEF => info.sp_skip = Some(e[6]),
            b"PX" if len >= 12 => {
                info.mode = Some(u32::from_le_bytes([e[4], e[5], e[6], e[7]]));
            }
            b"NM" if len >= 5 => {
                let flags = e[4];
                // CURRENT (2) / PARENT (4) name "." or ".."; nothing to record.
                if flags & 0x06 == 0 {
                    let name = info.name.get_or_insert_with(Vec::new);
                    if !info.name_continues {
                        name.clear();
                    }
                    if name.len() + (len - 5) <= MAX_NAME {
                        name.extend_from_slice(&e[5..]);
                    }
                    info.name_continues = flags & 1 != 0;
                }
            }
            b"TF" if len >= 5 => info.mtime = parse_tf(e).or(info.mtime),
            b"CE" if len >= 28 => {
                let g = |at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
                ce_ptr = Some((g(4), g(12), g(20)));
            }
            b"CL" if len >= 12 => {
                info.child_link = Some(u32::from_le_bytes([e[4], e[5], e[6], e[7]]));
            }
            b"RE" => info.relocated = true,
            b"ST" => break,
            _ => {}
        }
        i += len;
    }
    ce_ptr
}

/// The modification time from a TF entry (short or long form).
fn parse_tf(e: &[u8]) -> Option<i64> {
    let flags = e[4];
    let long = flags & 0x80 != 0;
    let size = if long { 17 } else { 7 };
    let mut at = 5;
    if flags & 0x01 != 0 {
        at += size; // creation time comes first
    }
    if flags & 0x02 == 0 {
        return None;
    }
    let b = e.get(at..at + size)?;
    if long {
        parse_long_date(b)
    } else {
        parse_dir_date(b)
    }
}

/// Parses a 17-byte "YYYYMMDDHHMMSScc" + offset date.
pub fn parse_long_date(b: &[u8]) -> Option<i64> {
    if b.len() < 17 || !b[..16].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
    };
    let (y, mo, d) = (num(0..4), num(4..6) as u32, num(6..8) as u32);
    let (h, mi, s) = (num(8..10), num(10..12), num(12..14));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let tz = b[16] as i8 as i64;
    Some(super::records::days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - tz * 900)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_name_splits_and_parses() {
        let name: Vec<u8> = (0..255u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut entries = vec![px(0o100644, 1), tf(1_700_000_000)];
        entries.extend(nm(&name));
        let p = pack(&entries, 200);
        assert!(!p.cont.is_empty());
        let mut info = RrInfo::default();
        parse_area(&p.inline, &mut info);
        parse_area(&p.cont, &mut info);
        assert_eq!(info.name.as_deref(), Some(&name[..]));
        assert_eq!(info.mode, Some(0o100644));
        assert_eq!(info.mtime, Some(1_700_000_000));
    }

    #[test]
    fn er_fits_in_one_entry() {
        assert!(er().len() <= 255);
        assert_eq!(sp().len(), 7);
        assert_eq!(px(0, 0).len(), 36);
        assert_eq!(tf(0).len(), 26);
    }
}

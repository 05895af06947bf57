//! Byte-level building blocks of ISO 9660: both-endian integers, the two date formats,
//! directory records, path table records and volume descriptors.
//!
//! Kept apart from the layout logic so that the on-disk encoding of every structure sits in one
//! place and can be read against ECMA-119 section by section. Nothing here allocates more than
//! one record or one sector.

/// Size of a logical sector / block. ISO 9660 allows others, but every reader expects 2048.
pub const SECTOR: u64 = 2048;
/// Largest extent we write: 4 GiB minus one sector, so each extent is a whole number of
/// sectors and its length fits the 32-bit size field (ISO level 3 multi-extent files).
pub const MAX_EXTENT: u64 = 0xFFFF_F800;

/// Directory record flag: the record describes a directory.
pub const FLAG_DIR: u8 = 0x02;
/// Directory record flag: more extents of the same file follow ("multi-extent").
pub const FLAG_MULTI_EXTENT: u8 = 0x80;

pub fn put_u16_both(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u32_both(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn set_u16_both(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
    buf[at + 2..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn set_u32_both(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    buf[at + 4..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Reads the little-endian half of a both-endian u32. Readers in the wild disagree on which
/// half to trust; some writers get the big-endian half wrong, so like most readers we use LE.
pub fn get_u32_le(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn get_u16_le(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

// ---------------------------------------------------------------------------------------------
// Dates. Written without any time crate: civil-from-days arithmetic (proleptic Gregorian, UTC).

/// Days since 1970-01-01 for a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Civil date (year, month, day) for days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Broken-down UTC time: (year, month, day, hour, minute, second).
pub fn unix_to_civil(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        ((secs % 3600) / 60) as u32,
        (secs % 60) as u32,
    )
}

/// Range representable by the 7-byte directory record date (years 1900..=2155). Times outside
/// are clamped: the exact value is kept in the catalog anyway.
pub const MIN_DIR_TIME: i64 = -2_208_988_800; // 1900-01-01T00:00:00Z
pub const MAX_DIR_TIME: i64 = 5_869_526_399; // 2155-12-31T23:59:59Z

/// 7-byte "recording date and time" (ECMA-119 9.1.5), also used by Rock Ridge TF short form.
/// Always written in UTC (offset 0) so the image does not depend on the machine's time zone.
pub fn dir_date(t: i64) -> [u8; 7] {
    let t = t.clamp(MIN_DIR_TIME, MAX_DIR_TIME);
    let (y, mo, d, h, mi, s) = unix_to_civil(t);
    [
        (y - 1900) as u8,
        mo as u8,
        d as u8,
        h as u8,
        mi as u8,
        s as u8,
        0,
    ]
}

/// Parses a 7-byte date; `None` when the fields are out of range (hostile or unset).
pub fn parse_dir_date(b: &[u8]) -> Option<i64> {
    if b.len() < 7 {
        return None;
    }
    let (y, mo, d, h, mi, s) = (
        1900 + b[0] as i64,
        b[1] as u32,
        b[2] as u32,
        b[3] as i64,
        b[4] as i64,
        b[5] as i64,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let tz = b[6] as i8 as i64; // offset from GMT in 15-minute units
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - tz * 15 * 60)
}

/// 17-byte volume descriptor date (ECMA-119 8.4.26.1): "YYYYMMDDHHMMSScc" + offset byte.
pub fn vd_date(t: i64) -> [u8; 17] {
    let (y, mo, d, h, mi, s) = unix_to_civil(t);
    let y = y.clamp(1, 9999);
    let txt = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}00");
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(txt.as_bytes());
    out
}

/// The "not specified" volume descriptor date: sixteen '0' digits and a zero offset.
pub fn vd_date_unset() -> [u8; 17] {
    let mut out = [b'0'; 17];
    out[16] = 0;
    out
}

// ---------------------------------------------------------------------------------------------
// Directory records (ECMA-119 9.1).

/// Length of a directory record with this identifier length and system use length. The record
/// length must be even: a pad byte follows an even-length identifier, and the system use area
/// is followed by one zero byte when needed.
pub fn dir_record_len(name_len: usize, su_len: usize) -> usize {
    let base = 33 + name_len + usize::from(name_len.is_multiple_of(2));
    let total = base + su_len;
    total + total % 2
}

/// Offset of the system use area inside a record with this identifier length.
pub fn su_offset(name_len: usize) -> usize {
    33 + name_len + usize::from(name_len.is_multiple_of(2))
}

/// Everything a directory record holds.
pub struct DirRecord<'a> {
    pub extent: u32,
    pub size: u32,
    pub mtime: i64,
    pub flags: u8,
    pub name: &'a [u8],
    pub su: &'a [u8],
}

impl DirRecord<'_> {
    pub fn len(&self) -> usize {
        dir_record_len(self.name.len(), self.su.len())
    }

    /// Appends the encoded record to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let len = self.len();
        debug_assert!(len <= 255);
        let start = out.len();
        out.push(len as u8);
        out.push(0); // extended attribute record length
        put_u32_both(out, self.extent);
        put_u32_both(out, self.size);
        out.extend_from_slice(&dir_date(self.mtime));
        out.push(self.flags);
        out.push(0); // file unit size (not interleaved)
        out.push(0); // interleave gap
        put_u16_both(out, 1); // volume sequence number
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name);
        if self.name.len().is_multiple_of(2) {
            out.push(0);
        }
        out.extend_from_slice(self.su);
        while out.len() - start < len {
            out.push(0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Path tables (ECMA-119 9.4).

/// Appends one path table record. `big_endian` selects the M table encoding.
pub fn write_path_record(
    out: &mut Vec<u8>,
    name: &[u8],
    extent: u32,
    parent: u16,
    big_endian: bool,
) {
    out.push(name.len() as u8);
    out.push(0);
    if big_endian {
        out.extend_from_slice(&extent.to_be_bytes());
        out.extend_from_slice(&parent.to_be_bytes());
    } else {
        out.extend_from_slice(&extent.to_le_bytes());
        out.extend_from_slice(&parent.to_le_bytes());
    }
    out.extend_from_slice(name);
    if name.len() % 2 == 1 {
        out.push(0);
    }
}

pub fn path_record_len(name_len: usize) -> usize {
    8 + name_len + name_len % 2
}

// ---------------------------------------------------------------------------------------------
// Volume descriptors (ECMA-119 8.4 and 8.5; Joliet for the supplementary one).

/// Fields of a primary or Joliet supplementary volume descriptor.
pub struct VolumeDescriptor<'a> {
    /// 1 = primary, 2 = supplementary (Joliet).
    pub kind: u8,
    /// Already encoded identifier fields (a/d-characters or UCS-2), padded by `pad_field`.
    pub volume_id: &'a [u8],
    pub system_id: &'a [u8],
    pub application_id: &'a [u8],
    pub space_sectors: u32,
    pub path_table_size: u32,
    pub l_table_sector: u32,
    pub m_table_sector: u32,
    /// The 34-byte root directory record.
    pub root_record: &'a [u8],
    pub created: i64,
    pub joliet: bool,
}

impl VolumeDescriptor<'_> {
    pub fn render(&self) -> Vec<u8> {
        let mut s = vec![0u8; SECTOR as usize];
        s[0] = self.kind;
        s[1..6].copy_from_slice(b"CD001");
        s[6] = 1;
        fill_field(&mut s[8..40], self.system_id, self.joliet);
        fill_field(&mut s[40..72], self.volume_id, self.joliet);
        set_u32_both(&mut s, 80, self.space_sectors);
        if self.joliet {
            // Escape sequence "%/E": UCS-2 level 3 (Joliet).
            s[88..91].copy_from_slice(b"%/E");
        }
        set_u16_both(&mut s, 120, 1); // volume set size
        set_u16_both(&mut s, 124, 1); // volume sequence number
        set_u16_both(&mut s, 128, SECTOR as u16);
        set_u32_both(&mut s, 132, self.path_table_size);
        s[140..144].copy_from_slice(&self.l_table_sector.to_le_bytes());
        s[148..152].copy_from_slice(&self.m_table_sector.to_be_bytes());
        s[156..156 + self.root_record.len()].copy_from_slice(self.root_record);
        fill_field(&mut s[190..318], b"", self.joliet); // volume set id
        fill_field(&mut s[318..446], b"", self.joliet); // publisher
        fill_field(&mut s[446..574], b"", self.joliet); // data preparer
        fill_field(&mut s[574..702], self.application_id, self.joliet);
        fill_field(&mut s[702..739], b"", self.joliet); // copyright file
        fill_field(&mut s[739..776], b"", self.joliet); // abstract file
        fill_field(&mut s[776..813], b"", self.joliet); // bibliographic file
        s[813..830].copy_from_slice(&vd_date(self.created));
        s[830..847].copy_from_slice(&vd_date(self.created));
        s[847..864].copy_from_slice(&vd_date_unset());
        s[864..881].copy_from_slice(&vd_date(self.created));
        s[881] = 1; // file structure version
        s
    }
}

/// Copies `value` into a fixed-width identifier field and pads it with spaces (0x20, or
/// UCS-2 0x0020 for Joliet), as ECMA-119 requires for unused identifier characters.
fn fill_field(field: &mut [u8], value: &[u8], ucs2: bool) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    let mut i = n;
    while i < field.len() {
        if ucs2 {
            if i + 1 < field.len() {
                field[i] = 0;
                field[i + 1] = b' ';
                i += 2;
            } else {
                field[i] = 0;
                i += 1;
            }
        } else {
            field[i] = b' ';
            i += 1;
        }
    }
}

/// Volume descriptor set terminator (type 255).
pub fn terminator() -> Vec<u8> {
    let mut s = vec![0u8; SECTOR as usize];
    s[0] = 255;
    s[1..6].copy_from_slice(b"CD001");
    s[6] = 1;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_roundtrip() {
        for t in [
            0i64,
            1,
            86399,
            86400,
            951_782_400,
            1_700_000_000,
            -1,
            -86401,
            MIN_DIR_TIME,
            MAX_DIR_TIME,
        ] {
            let d = dir_date(t);
            assert_eq!(parse_dir_date(&d), Some(t), "t={t}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }

    #[test]
    fn record_lengths_even() {
        for n in 1..=40 {
            for su in 0..=60 {
                assert_eq!(dir_record_len(n, su) % 2, 0);
            }
        }
    }

    #[test]
    fn vd_date_format() {
        assert_eq!(&vd_date(0)[..16], b"1970010100000000");
    }
}

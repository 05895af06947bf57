//! ISO 9660 (primary tree) identifiers: mangling arbitrary names into d-characters and
//! making them unique within a directory, plus the sort order ECMA-119 prescribes.
//!
//! The primary names are only a fallback for readers without Rock Ridge or Joliet, but they
//! must still be valid and unique, and deterministic so that the same inputs give the same
//! image. Uniqueness is decided on the name a reader shows (without ";1" and a trailing "."),
//! so two entries never look alike after a reader strips the version.

use std::collections::HashSet;
use std::hash::Hash;

/// Longest primary file identifier, name + "." + extension (ISO 9660 level 3 limit of 30 for
/// name and extension, kept including the dot to stay on the safe side).
pub const ISO_FILE_MAX: usize = 30;
/// Longest primary directory identifier.
pub const ISO_DIR_MAX: usize = 31;
/// Longest extension kept in primary names.
const ISO_EXT_MAX: usize = 8;

/// Maps one character to a d-character (A-Z, 0-9, _).
fn d_char(c: char) -> u8 {
    if c.is_ascii_alphanumeric() {
        c.to_ascii_uppercase() as u8
    } else {
        b'_'
    }
}

fn map_d(s: &str) -> Vec<u8> {
    s.chars().map(d_char).collect()
}

/// Splits a name at its last dot into (stem, extension), treating a leading dot (".bashrc")
/// as part of the stem.
pub fn split_ext(name: &str) -> (&str, Option<&str>) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    }
}

/// Truncates `v` to at most `max` units; `ok_cut(v, i)` says whether cutting before unit `i`
/// is allowed (used to avoid splitting UTF-16 surrogate pairs).
pub fn truncate_units<T: Copy>(
    v: &[T],
    max: usize,
    ok_cut: &dyn Fn(&[T], usize) -> bool,
) -> Vec<T> {
    let mut n = v.len().min(max);
    while n > 0 && n < v.len() && !ok_cut(v, n) {
        n -= 1;
    }
    v[..n].to_vec()
}

/// Builds a name no longer than `max` units from `stem` and `ext` (ext includes its
/// separator), unique among `taken` (which it then joins). On a clash a counter suffix
/// (`sep` + n) replaces the end of the stem. Terminates: at most `taken.len() + 1` counters
/// can be tried before one is free.
pub fn unique_name<T: Copy + Eq + Hash>(
    stem: &[T],
    ext: &[T],
    max: usize,
    taken: &mut HashSet<Vec<T>>,
    conv: &dyn Fn(u8) -> T,
    sep: u8,
    ok_cut: &dyn Fn(&[T], usize) -> bool,
) -> Vec<T> {
    let ext: Vec<T> = truncate_units(ext, max.saturating_sub(4), ok_cut);
    let room = max - ext.len();
    let mut cand = truncate_units(stem, room, ok_cut);
    cand.extend_from_slice(&ext);
    if !cand.is_empty() && !taken.contains(&cand) {
        taken.insert(cand.clone());
        return cand;
    }
    let mut n: u64 = 1;
    loop {
        let sfx: Vec<T> = format!("{}{n}", sep as char).bytes().map(conv).collect();
        let room = max.saturating_sub(ext.len() + sfx.len());
        let mut cand = truncate_units(stem, room, ok_cut);
        cand.extend_from_slice(&sfx);
        cand.extend_from_slice(&ext);
        if !taken.contains(&cand) {
            taken.insert(cand.clone());
            return cand;
        }
        n += 1;
    }
}

/// Primary identifiers for the children of one directory, given in a deterministic order.
/// Returns the "key" of each (no ";1", no dot for directories or extension-less files);
/// [`iso_record_name`] turns a key into the bytes written in the record.
pub fn assign_iso_names(children: &[(&[u8], bool)]) -> Vec<Vec<u8>> {
    let mut taken = HashSet::new();
    let ok = |_: &[u8], _: usize| true;
    children
        .iter()
        .map(|(raw, is_dir)| {
            let s = String::from_utf8_lossy(raw);
            if *is_dir {
                unique_name(&map_d(&s), &[], ISO_DIR_MAX, &mut taken, &|b| b, b'_', &ok)
            } else {
                let (stem, ext) = split_ext(&s);
                let mut e = Vec::new();
                if let Some(ext) = ext {
                    let m = map_d(ext);
                    if !m.is_empty() {
                        e.push(b'.');
                        e.extend_from_slice(&m[..m.len().min(ISO_EXT_MAX)]);
                    }
                }
                let mut st = map_d(stem);
                if st.is_empty() {
                    st.push(b'_');
                }
                unique_name(&st, &e, ISO_FILE_MAX, &mut taken, &|b| b, b'_', &ok)
            }
        })
        .collect()
}

/// Bytes of a primary identifier as written: files get "." (if they have no extension) and
/// the version ";1".
pub fn iso_record_name(key: &[u8], is_dir: bool) -> Vec<u8> {
    let mut v = key.to_vec();
    if !is_dir {
        if !v.contains(&b'.') {
            v.push(b'.');
        }
        v.extend_from_slice(b";1");
    }
    v
}

/// Sort key of ECMA-119 9.3: by name, then extension. Identifiers use only characters above
/// the 0x20 padding, so comparing (name, extension) lexicographically equals comparing them
/// space-padded.
pub fn sort_key<T: Copy + PartialEq>(key: &[T], dot: T) -> (Vec<T>, Vec<T>) {
    match key.iter().rposition(|&c| c == dot) {
        Some(i) => (key[..i].to_vec(), key[i + 1..].to_vec()),
        None => (key.to_vec(), Vec::new()),
    }
}

/// d-characters form of the volume identifier (32 characters at most).
pub fn volume_id_d(id: &str) -> Vec<u8> {
    let mut v = map_d(id);
    v.truncate(32);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_clash_gets_suffix() {
        let names = assign_iso_names(&[(b"A.jpg", false), (b"a.jpg", false), (b"a;b.c.d", false)]);
        assert_eq!(names[0], b"A.JPG");
        assert_eq!(names[1], b"A_1.JPG");
        assert_eq!(names[2], b"A_B_C.D");
    }

    #[test]
    fn long_and_unicode() {
        let long = vec![b'x'; 200];
        let names = assign_iso_names(&[
            (&long, false),
            (&long[..199], false),
            ("照片".as_bytes(), true),
        ]);
        assert!(names[0].len() <= ISO_FILE_MAX);
        assert_ne!(names[0], names[1]);
        assert_eq!(names[2], b"__");
        assert_eq!(iso_record_name(&names[2], true), b"__");
        assert_eq!(iso_record_name(b"EMPTY", false), b"EMPTY.;1");
    }

    #[test]
    fn many_clashes_terminate() {
        let raws: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("é{}", "é".repeat(i % 3)).into_bytes())
            .collect();
        let kids: Vec<(&[u8], bool)> = raws.iter().map(|r| (r.as_slice(), false)).collect();
        let names = assign_iso_names(&kids);
        let set: HashSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len());
    }
}

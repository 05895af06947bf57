//! Joliet names: the UCS-2 tree Windows (and 7-Zip, which always prefers Joliet over Rock
//! Ridge) show.
//!
//! Names are converted to UTF-16 big-endian. Characters outside the Basic Multilingual Plane
//! (emoji) are kept as surrogate pairs rather than replaced: strict UCS-2 readers see two
//! unknown characters, but Windows, Linux, libarchive and 7-Zip decode them as UTF-16. Names
//! are cut to [`JOLIET_MAX`] units (never inside a surrogate pair) and made unique within a
//! directory with a "~n" suffix. Characters Joliet forbids (`* / : ; ? \` and controls) become
//! `_`. Raw names that are not UTF-8 are decoded lossily (U+FFFD).

use super::names::{split_ext, unique_name};
use std::collections::HashSet;

/// Joliet's limit on identifier length (64 UCS-2 characters). The "joliet-long" convention of
/// 103 is not used: it breaks the specification and only 7-Zip users would gain from it.
pub const JOLIET_MAX: usize = 64;

fn allowed(c: char) -> char {
    match c {
        '\0'..='\u{1f}' | '*' | '/' | ':' | ';' | '?' | '\\' => '_',
        c => c,
    }
}

fn to_units(s: &str) -> Vec<u16> {
    s.chars()
        .map(allowed)
        .collect::<String>()
        .encode_utf16()
        .collect()
}

/// Cutting before unit `i` must not separate a high surrogate from its low surrogate.
fn ok_cut(v: &[u16], i: usize) -> bool {
    !(0xDC00..=0xDFFF).contains(&v[i])
}

/// Joliet names (UTF-16 units) for the children of one directory, in the given order.
pub fn assign_joliet_names(children: &[(&[u8], bool)]) -> Vec<Vec<u16>> {
    let mut taken: HashSet<Vec<u16>> = HashSet::new();
    children
        .iter()
        .map(|(raw, is_dir)| {
            let s = String::from_utf8_lossy(raw);
            let (stem, ext) = if *is_dir { (&*s, None) } else { split_ext(&s) };
            let ext_units: Vec<u16> = match ext {
                // Keep short extensions intact when truncating; long "extensions" are just
                // part of the name.
                Some(e) if e.chars().count() <= 16 => to_units(&format!(".{e}")),
                _ => Vec::new(),
            };
            let stem_units = if ext_units.is_empty() {
                to_units(&s)
            } else {
                to_units(stem)
            };
            unique_name(
                &stem_units,
                &ext_units,
                JOLIET_MAX,
                &mut taken,
                &|b| u16::from(b),
                b'~',
                &ok_cut,
            )
        })
        .collect()
}

pub fn to_be_bytes(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|u| u.to_be_bytes()).collect()
}

/// Decodes a Joliet identifier (UTF-16BE, lossy), dropping a trailing ";1" version as readers do.
pub fn decode(bytes: &[u8]) -> Vec<u8> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let mut s = String::from_utf16_lossy(&units);
    if let Some(stripped) = s.strip_suffix(";1") {
        s = stripped.to_string();
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_and_truncation() {
        let long = "照".repeat(100);
        let names = assign_joliet_names(&[
            ("🎉a;b.jpg".as_bytes(), false),
            (long.as_bytes(), false),
            (long.as_bytes()[..297].as_ref(), false),
        ]);
        assert_eq!(String::from_utf16(&names[0]).unwrap(), "🎉a_b.jpg");
        assert_eq!(names[1].len(), JOLIET_MAX);
        assert_ne!(names[1], names[2]);
        assert!(names[2].len() <= JOLIET_MAX);
    }

    #[test]
    fn never_splits_surrogates() {
        let name = "🎉".repeat(40); // 80 units
        let n = &assign_joliet_names(&[(name.as_bytes(), true)])[0];
        assert!(n.len() <= JOLIET_MAX);
        assert!(String::from_utf16(n).is_ok());
    }
}

//! File names and paths as bytes: the one form the manifest, exports, images and catalogs
//! hold on every platform.
//!
//! On Unix a name is the file system's raw bytes, kept exactly (non-UTF-8 included). On
//! Windows a name is UTF-16 and may hold unpaired surrogates; it is kept losslessly as
//! WTF-8, which is plain UTF-8 for every valid name, so a manifest shows the same bytes for
//! the same name on either system. Stored paths use `/` as the separator everywhere: a
//! Windows root is stored as `C:/Users/me/Pictures`, without the verbatim `\\?\` prefix that
//! canonicalisation adds (`//server/share/...` for a UNC path).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Whether this platform's file systems ignore case in names by default (NTFS on Windows,
/// APFS on macOS): a file renamed in case only is then the same file under a new name, and
/// its record moves with it instead of being taken as deleted plus new.
pub const FOLD_CASE: bool = cfg!(any(windows, target_os = "macos"));

/// The bytes of one name (or any OS string).
#[cfg(unix)]
pub fn os_bytes(s: &OsStr) -> Cow<'_, [u8]> {
    use std::os::unix::ffi::OsStrExt;
    Cow::Borrowed(s.as_bytes())
}

/// The bytes of one name (or any OS string).
#[cfg(windows)]
pub fn os_bytes(s: &OsStr) -> Cow<'_, [u8]> {
    use std::os::windows::ffi::OsStrExt;
    let units: Vec<u16> = s.encode_wide().collect();
    Cow::Owned(wtf8::encode(&units))
}

/// The OS string for stored bytes. On Windows, bytes that are not WTF-8 (a name recorded on
/// a Unix machine that was not UTF-8) cannot be a Windows name: each invalid byte becomes
/// U+FFFD.
#[cfg(unix)]
pub fn os_str(b: &[u8]) -> Cow<'_, OsStr> {
    use std::os::unix::ffi::OsStrExt;
    Cow::Borrowed(OsStr::from_bytes(b))
}

/// The OS string for stored bytes. On Windows, bytes that are not WTF-8 (a name recorded on
/// a Unix machine that was not UTF-8) cannot be a Windows name: each invalid byte becomes
/// U+FFFD.
#[cfg(windows)]
pub fn os_str(b: &[u8]) -> Cow<'_, OsStr> {
    use std::os::windows::ffi::OsStringExt;
    Cow::Owned(std::ffi::OsString::from_wide(&wtf8::decode(b)))
}

/// A path as stored: raw bytes on Unix; on Windows WTF-8 with `/` separators and without
/// the verbatim prefix.
pub fn path_bytes(p: &Path) -> Cow<'_, [u8]> {
    let b = os_bytes(p.as_os_str());
    if cfg!(windows) {
        Cow::Owned(windows_to_stored(&b))
    } else {
        b
    }
}

/// The path for stored bytes (the inverse of [`path_bytes`]).
pub fn path_of(b: &[u8]) -> PathBuf {
    if cfg!(windows) {
        let native: Vec<u8> = b
            .iter()
            .map(|&c| if c == b'/' { b'\\' } else { c })
            .collect();
        PathBuf::from(os_str(&native).into_owned())
    } else {
        PathBuf::from(os_str(b).into_owned())
    }
}

/// `std::fs::canonicalize` without the verbatim `\\?\` prefix it gives on Windows, so that
/// paths shown and stored read as the user wrote them (std adds the prefix back by itself
/// where a path is too long for the plain form).
pub fn canonical(p: &Path) -> std::io::Result<PathBuf> {
    let c = std::fs::canonicalize(p)?;
    Ok(if cfg!(windows) {
        path_of(&path_bytes(&c))
    } else {
        c
    })
}

/// `root` joined with a stored, `/`-separated relative path (`root` itself when empty).
pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(path_of(rel))
    }
}

/// A Windows path's bytes in stored form: `\` becomes `/`; `\\?\C:\x` becomes `C:/x` and
/// `\\?\UNC\server\share` becomes `//server/share`.
fn windows_to_stored(b: &[u8]) -> Vec<u8> {
    let b = if let Some(rest) = b.strip_prefix(br"\\?\UNC\") {
        let mut v = br"\\".to_vec();
        v.extend_from_slice(rest);
        v
    } else {
        b.strip_prefix(br"\\?\").unwrap_or(b).to_vec()
    };
    b.into_iter()
        .map(|c| if c == b'\\' { b'/' } else { c })
        .collect()
}

/// A stored absolute path made relative, for a place inside an image or a restore folder:
/// the leading `/` of a Unix path goes, and so does the colon of a Windows drive
/// (`C:/Users/me` becomes `C/Users/me`; `//server/share/x` becomes `server/share/x`), since
/// neither ISO 9660 nor a folder can hold a component named `C:`. A Unix path always starts
/// with `/`, so its folders keep their colons.
pub fn relative_path(abs: &[u8]) -> Vec<u8> {
    match abs {
        [d, b':', rest @ ..] if d.is_ascii_alphabetic() && (rest.is_empty() || rest[0] == b'/') => {
            let mut v = vec![*d];
            v.extend_from_slice(rest);
            v
        }
        _ => {
            let mut r = abs;
            while let Some(rest) = r.strip_prefix(b"/") {
                r = rest;
            }
            r.to_vec()
        }
    }
}

/// Whether Windows cannot hold `name` as one component as it is written: `\` is a separator
/// there, `a:b` names a hidden stream of `a`, and `* ? " < > |` and control characters are
/// refused. Checked on Windows before a stored name becomes a path, so that no name can put
/// bytes elsewhere than it says.
pub fn windows_refuses(name: &[u8]) -> bool {
    name.iter().any(|b| b"\\:*?\"<>|".contains(b) || *b < 0x20)
}

/// WTF-8: UTF-8 extended to unpaired surrogates, the lossless byte form of a Windows name.
/// Written for every platform so that it is tested everywhere.
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) mod wtf8 {
    /// UTF-16 units to WTF-8 bytes (an unpaired surrogate takes the 3-byte form of its value).
    pub fn encode(units: &[u16]) -> Vec<u8> {
        let mut out = Vec::with_capacity(units.len());
        for r in char::decode_utf16(units.iter().copied()) {
            match r {
                Ok(c) => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
                Err(e) => {
                    let u = u32::from(e.unpaired_surrogate());
                    out.extend_from_slice(&[
                        0xE0 | (u >> 12) as u8,
                        0x80 | ((u >> 6) & 0x3F) as u8,
                        0x80 | (u & 0x3F) as u8,
                    ]);
                }
            }
        }
        out
    }

    /// WTF-8 bytes to UTF-16 units; a byte that does not start a well-formed sequence
    /// becomes U+FFFD.
    pub fn decode(bytes: &[u8]) -> Vec<u16> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match sequence(&bytes[i..]) {
                Some((cp, len)) => {
                    if cp >= 0x1_0000 {
                        let c = cp - 0x1_0000;
                        out.push(0xD800 | (c >> 10) as u16);
                        out.push(0xDC00 | (c & 0x3FF) as u16);
                    } else {
                        out.push(cp as u16);
                    }
                    i += len;
                }
                None => {
                    out.push(0xFFFD);
                    i += 1;
                }
            }
        }
        out
    }

    /// The code point (surrogates allowed) at the start of `b`, and its length.
    fn sequence(b: &[u8]) -> Option<(u32, usize)> {
        let b0 = *b.first()?;
        let (len, min, init) = match b0 {
            0x00..=0x7F => return Some((u32::from(b0), 1)),
            0xC2..=0xDF => (2, 0x80, u32::from(b0 & 0x1F)),
            0xE0..=0xEF => (3, 0x800, u32::from(b0 & 0x0F)),
            0xF0..=0xF4 => (4, 0x1_0000, u32::from(b0 & 0x07)),
            _ => return None,
        };
        let tail = b.get(1..len)?;
        let mut cp = init;
        for &c in tail {
            if c & 0xC0 != 0x80 {
                return None;
            }
            cp = (cp << 6) | u32::from(c & 0x3F);
        }
        (cp >= min && cp <= 0x10_FFFF).then_some((cp, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn wtf8_is_utf8_for_valid_names_and_round_trips_lone_surrogates() {
        for s in ["a.jpg", "été 2021", "写真/猫.heic", "🎉 party 🎂.mov", ""] {
            assert_eq!(wtf8::encode(&utf16(s)), s.as_bytes(), "{s}");
            assert_eq!(wtf8::decode(s.as_bytes()), utf16(s), "{s}");
        }
        // Names Windows allows and UTF-8 cannot hold: unpaired surrogates, alone, at the
        // ends and between characters; and a high surrogate followed by a non-surrogate.
        for units in [
            vec![0xD800],
            vec![0xDFFF, 0x61],
            vec![0x61, 0xDC00, 0x62],
            vec![0xD83C, 0x61],
            vec![0xD83C, 0xDF89, 0xDC00],
        ] {
            let bytes = wtf8::encode(&units);
            assert!(std::str::from_utf8(&bytes).is_err());
            assert_eq!(wtf8::decode(&bytes), units, "{units:x?}");
        }
    }

    #[test]
    fn bytes_that_are_not_wtf8_become_replacement_characters() {
        // A Latin-1 name recorded on Unix, a cut sequence, an overlong form, a 5-byte lead.
        assert_eq!(wtf8::decode(b"caf\xe9.jpg"), utf16("caf\u{FFFD}.jpg"));
        assert_eq!(wtf8::decode(b"a\xe6\x97"), utf16("a\u{FFFD}\u{FFFD}"));
        assert_eq!(wtf8::decode(b"\xc0\xaf"), utf16("\u{FFFD}\u{FFFD}"));
        assert_eq!(wtf8::decode(b"\xf8\x88\x80\x80\x80"), vec![0xFFFD; 5]);
        assert_eq!(wtf8::decode(b"\xf4\x90\x80\x80"), vec![0xFFFD; 4]);
    }

    #[test]
    fn windows_paths_are_stored_with_slashes_and_no_verbatim_prefix() {
        assert_eq!(
            windows_to_stored(br"C:\Users\me\Pictures"),
            b"C:/Users/me/Pictures"
        );
        assert_eq!(windows_to_stored(br"\\?\C:\Users\me"), b"C:/Users/me");
        assert_eq!(
            windows_to_stored(br"\\?\UNC\nas\photos\2021"),
            b"//nas/photos/2021"
        );
        assert_eq!(windows_to_stored(br"\\nas\photos"), b"//nas/photos");
    }

    #[test]
    fn absolute_paths_become_relative_places() {
        assert_eq!(relative_path(b"/home/me/a.jpg"), b"home/me/a.jpg");
        assert_eq!(relative_path(b"C:/Users/me/a.jpg"), b"C/Users/me/a.jpg");
        assert_eq!(relative_path(b"//nas/photos/a.jpg"), b"nas/photos/a.jpg");
        assert_eq!(relative_path(b"D:"), b"D");
        // A Unix folder whose name looks like a drive keeps its colon: it is not a prefix.
        assert_eq!(relative_path(b"/C:/x"), b"C:/x");
        assert_eq!(relative_path(b"/home/x:y"), b"home/x:y");
    }

    #[test]
    fn names_windows_cannot_hold_are_known() {
        for bad in [
            &b"a\\..\\b"[..],
            b"a:b",
            b"x*",
            b"q?",
            b"l<",
            b"g>",
            b"p|",
            b"d\"q",
            b"t\tab",
        ] {
            assert!(windows_refuses(bad), "{bad:?}");
        }
        assert!(!windows_refuses(
            "été 写真 🎉 (1) [a] {b} #c.jpg".as_bytes()
        ));
    }

    #[cfg(unix)]
    #[test]
    fn unix_names_are_raw_bytes() {
        let raw = b"caf\xe9 \xff.jpg";
        assert_eq!(&*os_bytes(&os_str(raw)), raw);
        assert_eq!(&*path_bytes(&path_of(b"/lib/caf\xe9")), b"/lib/caf\xe9");
        assert_eq!(join(Path::new("/lib"), b"a/b"), Path::new("/lib/a/b"));
        assert_eq!(join(Path::new("/lib"), b""), Path::new("/lib"));
    }
}

//! lomob's key space on a site, and the checks that keep every key inside it.
//!
//! A site's objects live in exactly three folders under its prefix: `stage/` (one object
//! per content, named by its xxh3-128), `archive/` (images and their catalogs) and `meta/`
//! (manifest snapshots and the site mark). Nothing outside them is ever listed for cleanup,
//! aborted, renamed or deleted, and within them only names in lomob's own formats count as
//! lomob's. Keys also arrive from outside (an imported manifest, a snapshot downloaded from
//! a site), so every backend refuses a key that could escape its root, and import refuses
//! fields that are not in these formats.

/// The stage object of a content: named by content, so a content is staged once per site,
/// a new version never overwrites an older one not yet archived, and any file name works
/// on any backend.
pub fn stage_key(content: &[u8; 16]) -> String {
    format!("{STAGE}{}", hex::encode(content))
}

/// The archive object of an image.
pub fn archive_key(image: &str) -> String {
    format!("{ARCHIVE}{image}")
}

/// The catalog kept (hot) beside an image.
pub fn catalog_key(image_key: &str) -> String {
    format!("{image_key}.catalog.json")
}

pub const STAGE: &str = "stage/";
pub const ARCHIVE: &str = "archive/";
pub const META: &str = "meta/";
/// The mark naming the site and manifest that own a key space.
pub const SITE_MARK: &str = "meta/site.json";

/// True when `key` is `stage/<32 lowercase hex digits>`.
pub fn is_stage_key(key: &str) -> bool {
    key.strip_prefix(STAGE)
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// True when `key` is a stage object's `.partial` name: a copy to a local disk that a kill
/// interrupted before its rename into place (never recorded, so always garbage).
pub fn is_stage_partial_key(key: &str) -> bool {
    key.strip_suffix(".partial").is_some_and(is_stage_key)
}

/// True for an image name lomob could have made: `[A-Za-z0-9][A-Za-z0-9._-]*.iso`, at most
/// 200 bytes, no `..`.
pub fn is_image_name(name: &str) -> bool {
    name.len() <= 200
        && name.ends_with(".iso")
        && !name.contains("..")
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// True when `key` is an image of `site` or its catalog (or a `.partial` of either), as
/// sync names them: `archive/<site>-<YYYY-MM-DD>--<YYYY-MM-DD>[-N].iso`, or on an encrypted
/// site `archive/<site>-<16 hex digits>[-N].iso`. Another site's
/// images never match, even when one site's name starts with the other's.
pub fn is_site_image_key(site: &str, key: &str) -> bool {
    let Some(rest) = key
        .strip_prefix(ARCHIVE)
        .and_then(|k| k.strip_prefix(site))
        .and_then(|k| k.strip_prefix('-'))
    else {
        return false;
    };
    let rest = rest.strip_suffix(".partial").unwrap_or(rest);
    let rest = rest.strip_suffix(".catalog.json").unwrap_or(rest);
    let Some(stem) = rest.strip_suffix(".iso") else {
        return false;
    };
    // An encrypted site's: 16 keyed hex digits, then an optional -N.
    let hex16 =
        |s: &str| s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if stem.len() >= 16 && hex16(&stem[..16]) {
        return match &stem[16..] {
            "" => true,
            // A short counter only, so another site's keyed name never reads as one.
            n => n.strip_prefix('-').is_some_and(|d| {
                !d.is_empty() && d.len() <= 6 && d.bytes().all(|b| b.is_ascii_digit())
            }),
        };
    }
    let date = |s: &str| {
        s.len() == 10
            && s.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            })
    };
    // <date>--<date>, then an optional -N.
    if stem.len() < 22 || !date(&stem[..10]) || &stem[10..12] != "--" || !date(&stem[12..22]) {
        return false;
    }
    match &stem[22..] {
        "" => true,
        n => n
            .strip_prefix('-')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
    }
}

/// True when `key` is an image of `site` named as an encrypted site names them (16 keyed
/// hex digits, no dates): one stored before encryption was turned on is not.
pub fn is_sealed_image_key(site: &str, key: &str) -> bool {
    is_site_image_key(site, key)
        && key
            .strip_prefix(ARCHIVE)
            .and_then(|k| k.strip_prefix(site))
            .and_then(|k| k.strip_prefix('-'))
            .is_some_and(|rest| {
                rest.len() >= 20 && rest.as_bytes()[..16].iter().all(u8::is_ascii_hexdigit)
            })
}

/// True when `key` is a relative path that stays under the root it is joined to: no empty,
/// `.` or `..` segment, no leading `/`, no backslash, no control character.
pub fn is_confined(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && !key.chars().any(|c| c.is_control() || c == '\\')
        && key
            .trim_end_matches('/')
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// True when raw path bytes are a relative path with no empty, `.` or `..` segment and no
/// NUL: safe to join under a folder (file paths inside a root, paths inside an image).
/// Other bytes, control characters included, are legal in file names and kept.
pub fn is_relative_path(p: &[u8]) -> bool {
    !p.is_empty()
        && p[0] != b'/'
        && !p.contains(&0)
        && p.split(|&b| b == b'/')
            .all(|seg| !seg.is_empty() && seg != b"." && seg != b"..")
}

/// True when raw path bytes are an absolute path with no `.` or `..` segment and no NUL.
pub fn is_absolute_path(p: &[u8]) -> bool {
    p.first() == Some(&b'/')
        && !p.contains(&0)
        && p.split(|&b| b == b'/')
            .skip(1)
            .all(|seg| seg != b"." && seg != b"..")
}

/// True for a site name a profile accepts: letters, digits, `-` and `_`.
pub fn is_site_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_keys_are_content_hex_only() {
        assert!(is_stage_key(&stage_key(&[0xab; 16])));
        assert!(!is_stage_key("stage/../../etc/passwd"));
        assert!(!is_stage_key("stage/ABABABABABABABABABABABABABABABAB"));
        assert!(!is_stage_key("meta/0123456789abcdef0123456789abcdef"));
        let partial = format!("{}.partial", stage_key(&[0xab; 16]));
        assert!(is_stage_partial_key(&partial) && !is_stage_key(&partial));
        assert!(!is_stage_partial_key("stage/photo.jpg.partial"));
        assert!(!is_stage_partial_key(&stage_key(&[0xab; 16])));
    }

    #[test]
    fn site_image_keys_belong_to_one_site() {
        let k = "archive/parents-2020-01-01--2021-02-03.iso";
        assert!(is_site_image_key("parents", k));
        assert!(is_site_image_key("parents", &format!("{k}.partial")));
        assert!(is_site_image_key("parents", &catalog_key(k)));
        assert!(is_site_image_key(
            "parents",
            "archive/parents-2020-01-01--2021-02-03-12.iso"
        ));
        assert!(!is_site_image_key("parent", k));
        assert!(!is_site_image_key(
            "a",
            "archive/a-b-2020-01-01--2021-02-03.iso"
        ));
        assert!(!is_site_image_key("parents", "restic/data/00/abc"));
        assert!(!is_site_image_key("parents", "archive/parents-notes.iso"));
        assert!(!is_site_image_key(
            "parents",
            "archive/parents-2020-01-01--2021-02-03.iso.x"
        ));
    }

    #[test]
    fn confined_keys_cannot_escape() {
        assert!(is_confined("stage/abc"));
        assert!(is_confined("archive/x.iso.partial"));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
            "a\nb",
            "a/./b",
        ] {
            assert!(!is_confined(bad), "{bad:?}");
        }
    }

    #[test]
    fn relative_and_absolute_paths() {
        assert!(is_relative_path(b"2020/01/a\xff.jpg"));
        assert!(is_relative_path(b"a\nb"));
        for bad in [&b""[..], b"/a", b"a/../b", b"..", b"a//b", b"a\0b", b"./a"] {
            assert!(!is_relative_path(bad), "{bad:?}");
        }
        assert!(is_absolute_path(b"/home/me/Pictures"));
        assert!(is_absolute_path(b"/"));
        assert!(!is_absolute_path(b"home"));
        assert!(!is_absolute_path(b"/home/../etc"));
    }

    #[test]
    fn image_names() {
        assert!(is_image_name("parents-2020-01-01--2021-02-03.iso"));
        assert!(is_image_name("2023-01-05--2023-03-30-2.iso"));
        assert!(!is_image_name("../x.iso"));
        assert!(!is_image_name("a/b.iso"));
        assert!(!is_image_name("x.iso.catalog.json"));
        assert!(!is_image_name(".iso"));
    }
}

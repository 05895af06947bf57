//! Which files a restore brings back, and which of their versions: paths and globs matched
//! against the whole path (absolute, or relative to a root), the current version, the one
//! at a date, or the Nth one; files deleted locally only when asked for.

use std::collections::BTreeSet;

use crate::manifest::{ContentId, Manifest, ManifestError};

/// Which version of each file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// The newest version.
    Current,
    /// The version the file had at this time (unix seconds); files that did not exist yet,
    /// or were already deleted, are left out.
    At(i64),
    /// The Nth version, 1 being the oldest.
    Version(usize),
}

/// One file to bring back, as the manifest knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The original absolute path, as raw bytes: the file goes to `DIR` + this path.
    pub path: Vec<u8>,
    pub content: ContentId,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub sha256: [u8; 32],
}

#[derive(Debug, Default)]
pub struct Selection {
    pub files: Vec<Wanted>,
    /// Patterns that matched no file.
    pub unmatched: Vec<String>,
    /// Files matched that have no such version (`--version N` beyond their history).
    pub without_version: u64,
    /// Files matched but deleted locally, left out without `--deleted`.
    pub deleted_left_out: u64,
}

/// Picks the files and versions to restore. No pattern means every file.
pub fn select(
    m: &Manifest,
    patterns: &[Vec<u8>],
    when: When,
    deleted: bool,
) -> Result<Selection, ManifestError> {
    let roots: std::collections::HashMap<u32, Vec<u8>> =
        m.roots()?.into_iter().map(|r| (r.id, r.path)).collect();
    let patterns: Vec<Vec<u8>> = patterns.iter().map(|p| normalise(p)).collect();
    let mut hit = BTreeSet::new();
    let mut sel = Selection::default();
    for kv in m.files() {
        let (root, rel, f) = kv?;
        let Some(root_path) = roots.get(&root) else {
            continue;
        };
        let abs = join(root_path, &rel);
        if !patterns.is_empty() {
            let matched: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    let target = if p.starts_with(b"/") { &abs } else { &rel };
                    matches_path(p, target)
                })
                .map(|(i, _)| i)
                .collect();
            if matched.is_empty() {
                continue;
            }
            hit.extend(matched);
        }
        let version = match when {
            When::Current => {
                if f.deleted_at.is_some() && !deleted {
                    sel.deleted_left_out += 1;
                    continue;
                }
                f.versions.last()
            }
            When::At(t) => {
                if f.deleted_at.is_some_and(|d| d <= t) && !deleted {
                    sel.deleted_left_out += 1;
                    continue;
                }
                f.versions.iter().rev().find(|v| v.recorded <= t)
            }
            When::Version(n) => {
                if f.deleted_at.is_some() && !deleted {
                    sel.deleted_left_out += 1;
                    continue;
                }
                n.checked_sub(1).and_then(|i| f.versions.get(i))
            }
        };
        let Some(v) = version else {
            if !matches!(when, When::At(_)) {
                sel.without_version += 1;
            }
            continue;
        };
        let Some(c) = m.content(&v.content)? else {
            continue;
        };
        sel.files.push(Wanted {
            path: abs,
            content: v.content,
            size: v.size,
            mtime_ns: v.mtime_ns,
            mode: f.mode,
            sha256: c.sha256,
        });
    }
    sel.unmatched = patterns
        .iter()
        .enumerate()
        .filter(|(i, _)| !hit.contains(i))
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect();
    Ok(sel)
}

fn join(root: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut abs = root.to_vec();
    if !abs.ends_with(b"/") {
        abs.push(b'/');
    }
    abs.extend_from_slice(rel);
    abs
}

/// Drops `./` in front and a trailing `/`, so `./2023/` names the folder `2023`.
fn normalise(p: &[u8]) -> Vec<u8> {
    let mut p = p;
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    p.to_vec()
}

/// True when the pattern matches the whole path, or a folder the path is in.
pub fn matches_path(pattern: &[u8], path: &[u8]) -> bool {
    if glob(pattern, path) {
        return true;
    }
    path.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .any(|(i, _)| i > 0 && glob(pattern, &path[..i]))
}

/// Shell-style matching on raw bytes: `*` within one folder, `**` across folders, `?` one
/// byte other than `/`, `[abc]`, `[a-z]` and `[!x]` one byte of a set, `\` escapes.
pub fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            // `**/` also matches no folder at all.
            if let Some(after) = rest.strip_prefix(b"/") {
                if glob(after, s) {
                    return true;
                }
            }
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            for i in 0..=s.len() {
                if glob(rest, &s[i..]) {
                    return true;
                }
                if s.get(i) == Some(&b'/') {
                    break;
                }
            }
            false
        }
        Some(b'?') => s.first().is_some_and(|&c| c != b'/') && glob(&p[1..], &s[1..]),
        Some(b'[') => match (class(&p[1..]), s.first()) {
            (Some((set_matches, len)), Some(&c)) if c != b'/' => {
                set_matches(c) && glob(&p[1 + len..], &s[1..])
            }
            (None, Some(&c)) => c == b'[' && glob(&p[1..], &s[1..]),
            _ => false,
        },
        Some(b'\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob(&p[2..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

/// A `[...]` class after its `[`: a matcher and the bytes it takes, including `]`.
#[allow(clippy::type_complexity)]
fn class(p: &[u8]) -> Option<(Box<dyn Fn(u8) -> bool + '_>, usize)> {
    let (negate, start) = match p.first() {
        Some(b'!') | Some(b'^') => (true, 1),
        _ => (false, 0),
    };
    // A `]` right after the opening is a member, not the end.
    let end = p[start..]
        .iter()
        .enumerate()
        .position(|(i, &b)| b == b']' && i > 0)
        .map(|i| start + i)?;
    let body = &p[start..end];
    let f = move |c: u8| {
        let mut i = 0;
        let mut found = false;
        while i < body.len() {
            if i + 2 < body.len() && body[i + 1] == b'-' {
                found |= (body[i]..=body[i + 2]).contains(&c);
                i += 3;
            } else {
                found |= body[i] == c;
                i += 1;
            }
        }
        found != negate
    };
    Some((Box::new(f), end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_the_whole_path() {
        assert!(glob(b"2023/*.jpg", b"2023/a.jpg"));
        assert!(!glob(b"2023/*.jpg", b"2023/x/a.jpg"));
        assert!(glob(b"2023/**/*.jpg", b"2023/x/y/a.jpg"));
        assert!(glob(b"2023/**/*.jpg", b"2023/a.jpg"));
        assert!(glob(b"**/*.mp4", b"a/b/c.mp4"));
        assert!(glob(b"IMG_00?.jpg", b"IMG_001.jpg"));
        assert!(!glob(b"IMG_00?.jpg", b"IMG_0010.jpg"));
        assert!(glob(b"[ab]*", b"b.x"));
        assert!(glob(b"[!ab]*", b"c.x"));
        assert!(glob(b"[a-c]1", b"b1"));
        assert!(!glob(b"[a-c]1", b"d1"));
        assert!(glob(b"a\\*", b"a*"));
        assert!(!glob(b"a\\*", b"ab"));
        assert!(glob(b"\xff*", b"\xff\xfe.jpg"));
    }

    #[test]
    fn a_folder_pattern_takes_everything_below_it() {
        assert!(matches_path(b"2023", b"2023/01/a.jpg"));
        assert!(matches_path(b"/lib/2023", b"/lib/2023/a.jpg"));
        assert!(!matches_path(b"2023", b"20230/a.jpg"));
        assert!(matches_path(b"20*", b"2023/a.jpg"));
        assert_eq!(normalise(b"./2023/"), b"2023");
        assert_eq!(normalise(b"/"), b"/");
    }
}

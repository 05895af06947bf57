//! The local part of a check: finding bit rot the scan cannot see.
//!
//! A scan trusts a file whose size, mtime and inode are unchanged and never reads it again,
//! so bytes that rot under an unchanged stat go unnoticed (and would be backed up as they
//! are, or restored over). This part re-reads, within a byte budget per run, a rotating
//! slice of the files whose stat is unchanged, and compares their hash with the recorded
//! one: every byte is read again once per cycle (by default 5% of the library a day, so
//! about a month). A difference is possible silent corruption: recorded as a new version
//! like any change (the good version stays restorable), and reported with the sites that
//! hold the good copy and the exact command that puts it back.

use std::collections::HashMap;

use super::{PartReport, Problem};
use crate::manifest::{self, FileRecord, Manifest, ManifestError};
use crate::scan::hash::hash_file;
use crate::scan::walk::{mtime_ns, WalkEntry};
use crate::sync::changed::{record_silent_change, Recording};

/// The record of the local part is kept under this site name (it belongs to no site).
pub const RECORD_SITE: &str = "";

/// How much one run may read: the share of the library per day times the days since the
/// last local check (at least one, at most a whole cycle), or a fixed size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// A share of the library's bytes per day (0.05 = 5%).
    PerDay(f64),
    Bytes(u64),
}

impl Budget {
    /// `5%` (of the library per day) or a size such as `20GB`.
    pub fn parse(s: &str) -> Result<Budget, String> {
        if let Some(pct) = s.trim().strip_suffix('%') {
            let v: f64 = pct
                .trim()
                .parse()
                .map_err(|_| "not a percentage: write it like 5%".to_string())?;
            if !(v > 0.0 && v <= 100.0) {
                return Err("the share must be above 0% and at most 100%".into());
            }
            return Ok(Budget::PerDay(v / 100.0));
        }
        s.parse::<lomob_backends::ByteSize>()
            .map(|b| Budget::Bytes(b.bytes()))
            .map_err(|e| format!("{e}; write a share of the library per day (5%) or a size (20GB)"))
    }

    /// The bytes this run may read.
    pub fn bytes(self, library: u64, days_since: f64) -> u64 {
        match self {
            Budget::Bytes(b) => b,
            Budget::PerDay(share) => {
                let days = days_since.clamp(1.0, 1.0 / share.max(1e-6));
                (library as f64 * share * days).ceil() as u64
            }
        }
    }
}

/// Re-reads files from where the last local check stopped, within `budget`.
pub fn check(m: &Manifest, budget: Budget) -> Result<PartReport, ManifestError> {
    let mut p = PartReport::new("local");
    let prev = m.check_record(RECORD_SITE, "local")?;
    let roots: HashMap<u32, Vec<u8>> = m.roots()?.into_iter().map(|r| (r.id, r.path)).collect();
    let mut files: Vec<(u32, Vec<u8>, FileRecord)> = Vec::new();
    let mut library = 0u64;
    for kv in m.files() {
        let (root, rel, f) = kv?;
        if !f.is_deleted() {
            library += f.size;
            files.push((root, rel, f));
        }
    }
    let days = prev
        .as_ref()
        .map_or(1.0, |r| (manifest::now() - r.ran) as f64 / 86_400.0);
    let allowed = budget.bytes(library, days);
    let cursor = prev.and_then(|r| r.cursor).unwrap_or_default();
    let key = |root: u32, rel: &[u8]| crate::manifest::records::file_key(root, rel);
    let split = files.partition_point(|(r, rel, _)| key(*r, rel) <= cursor);
    let order = (split..files.len()).chain(0..split);
    let mut buf = Vec::new();
    p.checked = true;
    for i in order {
        if p.read_bytes >= allowed {
            p.notes.push(format!(
                "read {} of the library's {} this run (budget {}); the next runs go on from here",
                lomob_backends::ByteSize(p.read_bytes),
                lomob_backends::ByteSize(library),
                lomob_backends::ByteSize(allowed)
            ));
            break;
        }
        let (root, rel, f) = &files[i];
        p.cursor = Some(key(*root, rel));
        let Some(root_path) = roots.get(root) else {
            continue;
        };
        let mut abs = root_path.clone();
        abs.push(b'/');
        abs.extend_from_slice(rel);
        let path = crate::platform::names::path_of(&abs);
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue; // Gone or unmounted: the scan's business.
        };
        let inode = crate::platform::file::identity(&md, || path.clone()).inode;
        if !md.is_file() || md.len() != f.size || mtime_ns(&md) != f.mtime_ns || inode != f.inode {
            continue; // Changed the ordinary way: the next scan records it.
        }
        p.looked_at += 1;
        let entry = WalkEntry::from_metadata(rel.clone(), &md, || path.clone());
        let h = match hash_file(&path, &entry, &mut buf) {
            Ok(h) => h,
            Err(e) => {
                p.find(
                    Problem::Unreadable,
                    &path.display().to_string(),
                    format!("cannot be read: {e}"),
                    f.size,
                );
                continue;
            }
        };
        p.read_bytes += f.size;
        let previous = f.current().content;
        if h.xxh3 == previous || h.entry.size != f.size || h.entry.mtime_ns != f.mtime_ns {
            continue;
        }
        corrupt(m, &mut p, *root, rel, f.clone(), &path, &h)?;
    }
    Ok(p)
}

/// Records and reports one file whose bytes changed under an unchanged stat.
fn corrupt(
    m: &Manifest,
    p: &mut PartReport,
    root: u32,
    rel: &[u8],
    f: FileRecord,
    path: &std::path::Path,
    h: &crate::scan::hash::Hashed,
) -> Result<(), ManifestError> {
    let previous = f.current().content;
    let good_version = f.versions.len();
    let shown = path.display().to_string();
    let lost = match record_silent_change(m, root, rel, f.clone(), previous, f.size, h) {
        Ok((_, lost)) => lost,
        Err(Recording::Manifest(e)) => return Err(e),
        Err(Recording::Collision(msg)) => {
            p.find(Problem::SilentCorruption, &shown, msg, f.size);
            return Ok(());
        }
    };
    let mut sites: Vec<String> = m
        .staged(None)?
        .into_iter()
        .filter(|(_, c, _)| *c == previous)
        .map(|(s, _, _)| s)
        .chain(
            m.archived(None)?
                .into_iter()
                .filter(|(_, c, _)| *c == previous)
                .map(|(s, _, _)| s),
        )
        .collect();
    sites.sort();
    sites.dedup();
    let message = if lost || sites.is_empty() {
        "possible silent corruption: its bytes changed while size, mtime and inode did not, and no site holds the earlier bytes".to_string()
    } else {
        format!(
            "possible silent corruption: its bytes changed while size, mtime and inode did not; the earlier bytes are on site(s) {}; the new bytes are kept as version {} and backed up too",
            sites.join(", "),
            good_version + 1
        )
    };
    let finding = p.find(Problem::SilentCorruption, &shown, message, f.size);
    finding.content = Some(previous);
    if !sites.is_empty() {
        finding.fix = Some(format!(
            "lomob restore {} --version {good_version} --to / --overwrite",
            shell_quote(&shown)
        ));
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn a_daily_share_grows_with_the_days_missed_up_to_a_whole_cycle() {
        let b = Budget::PerDay(0.05);
        assert_eq!(b.bytes(1000, 0.1), 50);
        assert_eq!(b.bytes(1000, 3.0), 150);
        assert_eq!(b.bytes(1000, 365.0), 1000);
        assert_eq!(Budget::Bytes(7).bytes(1000, 9.0), 7);
    }
}

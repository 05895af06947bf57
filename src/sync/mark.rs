//! A site's claim on its key space: `meta/site.json`, naming the site and the manifest that
//! own the location, written at first use on the stage and on the archive.
//!
//! Two sites (or two machines) writing to one location would free, expire or clean up each
//! other's objects. A profile refuses two sites with overlapping locations, but another
//! profile, another machine or a renamed site can still point at the same place; the mark
//! catches those. `sync` and `site test` refuse a location marked for another site or
//! manifest, with a message saying what to do; `lomob site claim` takes a location over
//! when the old manifest is gone for good. A manifest recovered from an export keeps its
//! id, so recovery on a new machine needs no claim.

use serde::{Deserialize, Serialize};

use crate::keys::SITE_MARK;
use crate::manifest::{self, Manifest};
use crate::site::Site;
use crate::store::{BackendInfo, Role, StoreError};
use lomob_backends::object::{provider_sum, ObjectInfo};

/// The mark's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteMark {
    pub format: String,
    pub site: String,
    pub manifest: String,
    /// Unix seconds it was written.
    pub created: i64,
}

const FORMAT: &str = "lomob-site";

/// What a location's mark says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkState {
    /// Marked for this site and manifest.
    Ours,
    /// Not marked yet.
    Unmarked,
    /// Holds the start of this site's own mark, cut by a write that was killed (a store
    /// that writes in place): rewritten by the next sync.
    Torn,
    /// Marked for another site or another manifest.
    Foreign(SiteMark),
}

/// Why a location cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error("site {site}: the {role} location {location} belongs to site {other_site:?} of {whose}: two sites or machines must never share a location (one would free or clean up what the other still needs). Give site {site} its own folder, bucket or prefix; or, if that manifest is gone for good and this machine replaces it, run `lomob site claim {site}`")]
    Foreign {
        site: String,
        role: Role,
        location: String,
        other_site: String,
        whose: String,
    },
    #[error("site {site}: the {role} location {location} holds a {SITE_MARK} that is not a lomob site mark ({reason}): lomob will not use a location it cannot show is its own; remove the file if it is a leftover, or choose another location")]
    Malformed {
        site: String,
        role: Role,
        location: String,
        reason: String,
    },
    #[error("site {site}: the {role} location {location} gave two different {SITE_MARK} in two reads: a server or the network is corrupting answers; nothing was changed, run again later")]
    Unsteady {
        site: String,
        role: Role,
        location: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
}

fn parse(info: &BackendInfo, site: &str, bytes: &[u8]) -> Result<SiteMark, MarkError> {
    let malformed = |reason: String| MarkError::Malformed {
        site: site.to_string(),
        role: info.role,
        location: info.location.clone(),
        reason,
    };
    let mark: SiteMark = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if mark.format != FORMAT {
        return Err(malformed(format!("format {:?}", mark.format)));
    }
    Ok(mark)
}

fn state(mark: SiteMark, site: &str, id: &str) -> MarkState {
    if mark.site == site && mark.manifest == id {
        MarkState::Ours
    } else {
        MarkState::Foreign(mark)
    }
}

/// The id of the manifest that marked the site's locations (the archive's mark first: it
/// outlives a wiped stage), for a recovery that continues that manifest.
pub async fn owner(site: &Site) -> Option<String> {
    let archive = async {
        let o = site.archive.stat(SITE_MARK).await.ok()??;
        site.archive
            .read_range(SITE_MARK, 0..o.info.size)
            .await
            .ok()
    };
    let bytes = match archive.await {
        Some(b) => b,
        None => {
            let o = site.stage.stat(SITE_MARK).await.ok()??;
            site.stage.read_range(SITE_MARK, 0..o.size).await.ok()?
        }
    };
    let mark = parse(site.archive.info(), &site.name, &bytes).ok()?;
    (mark.site == site.name).then_some(mark.manifest)
}

/// Reads the marks of the site's stage and archive. A mark that would stop the site (not
/// a mark, or another's) is read a second time before it is believed: an answer corrupted
/// by a server or the network must not make lomob refuse its own location, or take it for
/// another's (see [`settle`]).
pub async fn check(m: &Manifest, site: &Site) -> Result<[(Role, MarkState); 2], MarkError> {
    let id = m.id()?;
    let stage = match site.stage.stat(SITE_MARK).await? {
        None => MarkState::Unmarked,
        Some(o) => {
            let read = || site.stage.read_range(SITE_MARK, 0..o.size);
            read_mark(site.stage.info(), &site.name, &id, &o, read).await?
        }
    };
    let archive = match site.archive.stat(SITE_MARK).await? {
        None => MarkState::Unmarked,
        Some(o) => {
            let read = || site.archive.read_range(SITE_MARK, 0..o.info.size);
            read_mark(site.archive.info(), &site.name, &id, &o.info, read).await?
        }
    };
    Ok([(Role::Stage, stage), (Role::Archive, archive)])
}

/// Reads a mark with `read`, and once more when it would stop the site ([`settle`]).
async fn read_mark<F, Fut>(
    info: &BackendInfo,
    site: &str,
    id: &str,
    stat: &ObjectInfo,
    read: F,
) -> Result<MarkState, MarkError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, StoreError>>,
{
    let read = || read_checked(info, site, stat, &read);
    let bytes = read().await?;
    let judged = judge(info, site, id, &bytes);
    if matches!(judged, Ok(MarkState::Ours)) {
        return judged;
    }
    let again = read().await?;
    settle(info, site, id, judged, &bytes, &again)
}

/// Reads made when the store's digest of the mark shows the answers damaged, before lomob
/// says the location is unsteady.
const CHECKED_READS: usize = 3;

/// `read`, again while the answer does not match the digest the store keeps for the mark
/// ([`damaged`]): a damage that repeats itself (a proxy that alters every answer the same
/// way) must not read as a foreign or malformed mark.
async fn read_checked<F, Fut>(
    info: &BackendInfo,
    site: &str,
    stat: &ObjectInfo,
    read: &F,
) -> Result<Vec<u8>, MarkError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, StoreError>>,
{
    for _ in 0..CHECKED_READS {
        let bytes = read().await?;
        if !damaged(stat, &bytes) {
            return Ok(bytes);
        }
        tracing::warn!(
            "site {site}: the {} location's {SITE_MARK} read back unlike the digest its store keeps; reading it again",
            info.role
        );
    }
    Err(MarkError::Unsteady {
        site: site.to_string(),
        role: info.role,
        location: info.location.clone(),
    })
}

/// True when the digest the store keeps for the object (the SHA-256 lomob stored with it,
/// or a provider's `sha256:`/`md5:` checksum) says `bytes` are not what it holds. Without
/// one, nothing can be told from the bytes alone.
fn damaged(stat: &ObjectInfo, bytes: &[u8]) -> bool {
    use sha2::Digest as _;
    let sha256 = || hex::encode(sha2::Sha256::digest(bytes));
    if let Some(want) = &stat.sha256 {
        return !want.eq_ignore_ascii_case(&sha256());
    }
    match stat.etag.as_deref().and_then(provider_sum) {
        Some(("sha256", want)) => !want.eq_ignore_ascii_case(&sha256()),
        Some(("md5", want)) => !want.eq_ignore_ascii_case(&hex::encode(md5::Md5::digest(bytes))),
        _ => false,
    }
}

fn judge(info: &BackendInfo, site: &str, id: &str, bytes: &[u8]) -> Result<MarkState, MarkError> {
    match parse(info, site, bytes) {
        Ok(mark) => Ok(state(mark, site, id)),
        Err(_) if torn(bytes, site, id) => Ok(MarkState::Torn),
        Err(e) => Err(e),
    }
}

/// True when `bytes` are a cut copy of the mark this site and manifest would write (empty
/// included): what a kill during the write leaves on a store that writes in place.
fn torn(bytes: &[u8], site: &str, id: &str) -> bool {
    let whole = render(site, id, 0);
    // Everything up to the `created` value is fixed; the value is digits.
    let head_len = whole.len() - "0\n}".len();
    let head = &whole[..head_len];
    if bytes.len() <= head_len {
        return head[..bytes.len()] == *bytes;
    }
    let rest = &bytes[head_len..];
    bytes.starts_with(head) && {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        !rest[..digits].is_empty() && matches!(&rest[digits..], b"" | b"\n")
    }
}

fn render(site: &str, id: &str, created: i64) -> Vec<u8> {
    let mark = SiteMark {
        format: FORMAT.into(),
        site: site.to_string(),
        manifest: id.to_string(),
        created,
    };
    serde_json::to_vec_pretty(&mark).expect("a mark serialises")
}

/// A mark that would stop the site, read again: the same bytes twice are believed; a
/// second read that is this site's own mark means the first answer was corrupted; two
/// different answers, neither ours, are a transient error.
fn settle(
    info: &BackendInfo,
    site: &str,
    id: &str,
    first: Result<MarkState, MarkError>,
    first_bytes: &[u8],
    second_bytes: &[u8],
) -> Result<MarkState, MarkError> {
    if first_bytes == second_bytes {
        return first;
    }
    match judge(info, site, id, second_bytes) {
        Ok(MarkState::Ours) => Ok(MarkState::Ours),
        _ => Err(MarkError::Unsteady {
            site: site.to_string(),
            role: info.role,
            location: info.location.clone(),
        }),
    }
}

fn foreign(m: &Manifest, site: &Site, role: Role, mark: SiteMark) -> Result<MarkError, MarkError> {
    let info = match role {
        Role::Stage => site.stage.info(),
        Role::Archive => site.archive.info(),
    };
    let whose = if mark.manifest == m.id()? {
        "this manifest".to_string()
    } else {
        format!("another lomob manifest (id {})", mark.manifest)
    };
    Ok(MarkError::Foreign {
        site: site.name.clone(),
        role,
        location: info.location.clone(),
        other_site: mark.site,
        whose,
    })
}

/// Refuses a location marked for another site or manifest, and marks unmarked ones.
pub async fn claim(m: &Manifest, site: &Site) -> Result<(), MarkError> {
    let marks = check(m, site).await?;
    for (role, st) in &marks {
        if let MarkState::Foreign(mark) = st {
            return Err(foreign(m, site, *role, mark.clone())?);
        }
    }
    for (role, st) in marks {
        match st {
            MarkState::Unmarked => write(m, site, role).await?,
            MarkState::Torn => {
                remove(site, role).await?;
                write(m, site, role).await?;
            }
            MarkState::Ours | MarkState::Foreign(_) => {}
        }
    }
    Ok(())
}

/// Marks both locations for this site and manifest, replacing another's mark (`lomob site
/// claim`, when the manifest that owned them is gone for good).
pub async fn take_over(m: &Manifest, site: &Site) -> Result<(), MarkError> {
    for (role, st) in check(m, site).await? {
        match st {
            MarkState::Ours => continue,
            MarkState::Foreign(_) | MarkState::Torn => remove(site, role).await?,
            MarkState::Unmarked => {}
        }
        write(m, site, role).await?;
    }
    Ok(())
}

async fn remove(site: &Site, role: Role) -> Result<(), MarkError> {
    match role {
        Role::Stage => site.stage.delete(SITE_MARK).await?,
        Role::Archive => site.archive.delete(SITE_MARK).await?,
    }
    Ok(())
}

async fn write(m: &Manifest, site: &Site, role: Role) -> Result<(), MarkError> {
    let bytes = render(&site.name, &m.id()?, manifest::now());
    match role {
        Role::Stage => {
            site.stage.put_bytes(SITE_MARK, bytes).await?;
        }
        Role::Archive => {
            // Hot, like a catalog: read on every run, never frozen. The stage may share
            // the location and have written the same mark a moment ago.
            if let crate::archive::PutOutcome::Occupied { .. } =
                site.archive.put_index(SITE_MARK, bytes).await?
            {
                match check(m, site).await?[1].1.clone() {
                    MarkState::Ours | MarkState::Unmarked | MarkState::Torn => {}
                    MarkState::Foreign(other) => return Err(foreign(m, site, role, other)?),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_copy_of_our_own_mark_is_torn_and_nothing_else_is() {
        let whole = render("friend", "abc123", 1_764_000_000);
        for n in 0..whole.len() {
            assert!(torn(&whole[..n], "friend", "abc123"), "cut at {n}");
        }
        // Whole, it parses: `judge` never asks.
        assert!(serde_json::from_slice::<SiteMark>(&whole).is_ok());
        // Another site's, another manifest's, or other bytes are never taken for ours.
        let other = render("friends", "abc123", 1_764_000_000);
        assert!(!torn(&other[..other.len() - 2], "friend", "abc123"));
        let other = render("friend", "abc124", 1_764_000_000);
        assert!(!torn(&other[..other.len() - 2], "friend", "abc123"));
        let mut junk = whole[..whole.len() - 4].to_vec();
        junk.extend_from_slice(b"x");
        assert!(!torn(&junk, "friend", "abc123"));
        assert!(!torn(b"not json", "friend", "abc123"));
    }

    /// A proxy that alters the same byte of every answer: two equal reads, neither the
    /// mark. With the digest the store keeps, they are read again rather than believed.
    #[tokio::test]
    async fn answers_damaged_the_same_way_twice_are_not_taken_for_a_foreign_mark() {
        use sha2::Digest as _;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let config = lomob_backends::BackendConfig::Fs(lomob_backends::fs::FsConfig {
            root: "/nowhere".into(),
            verify_read_back: false,
        });
        let info = BackendInfo {
            site: "deep".into(),
            role: Role::Stage,
            kind: "s3",
            capabilities: config.capabilities(),
            location: "s3://bucket/".into(),
        };
        let mark = render("deep", "id1", 1_764_000_000);
        let mut bad = mark.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0x5a;
        let stat = |sha256: Option<String>| ObjectInfo {
            key: SITE_MARK.into(),
            size: mark.len() as u64,
            etag: None,
            modified: None,
            sha256,
        };
        let digest = Some(hex::encode(sha2::Sha256::digest(&mark)));
        // Damaged twice, then whole: ours.
        let reads = AtomicUsize::new(0);
        let read = || {
            let n = reads.fetch_add(1, Ordering::SeqCst);
            let bytes = if n < 2 { bad.clone() } else { mark.clone() };
            async move { Ok::<_, StoreError>(bytes) }
        };
        let got = read_mark(&info, "deep", "id1", &stat(digest.clone()), read).await;
        assert_eq!(got.unwrap(), MarkState::Ours);
        // Always damaged: unsteady (run again later), never malformed or foreign.
        let always = || {
            let bytes = bad.clone();
            async move { Ok::<_, StoreError>(bytes) }
        };
        let got = read_mark(&info, "deep", "id1", &stat(digest), always).await;
        assert!(matches!(got, Err(MarkError::Unsteady { .. })), "{got:?}");
        // Without a digest the same answers twice are believed, as before.
        let got = read_mark(&info, "deep", "id1", &stat(None), always).await;
        assert!(matches!(got, Err(MarkError::Malformed { .. })), "{got:?}");
        // A provider checksum kept as the ETag serves as the digest too.
        let mut with_md5 = stat(None);
        with_md5.etag = Some(format!("md5:{}", hex::encode(md5::Md5::digest(&mark))));
        assert!(damaged(&with_md5, &bad) && !damaged(&with_md5, &mark));
    }
}

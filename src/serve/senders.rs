//! The paired senders and the pending pairing codes, kept in the receiver's state folder.
//!
//! `senders.json` (mode 0600) lists each sender's name, access key, secret key, bucket and
//! quota: the receiver must know the secret to check SigV4 signatures. It is written
//! through a temporary name and renamed, so a crash leaves the old list or the new one.
//!
//! A pending code is a file `codes/<SHA-256 of the token>.json` (the token itself is never
//! stored) that `lomob serve pair` writes and the running receiver consumes: removing the
//! file is what redeems it, so a code works once even when two senders race with it, and
//! it works whether the receiver was running when the code was made or started later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::code::TOKEN;
use super::{Grant, Senders};

/// How long a pairing code stays valid.
pub const CODE_LIFETIME: Duration = Duration::from_secs(15 * 60);

const SENDERS: &str = "senders.json";
const CODES: &str = "codes";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SenderRecord {
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub bucket: String,
    pub quota: Option<u64>,
    /// Seconds since the Unix epoch.
    pub paired_at: u64,
    pub last_write: Option<u64>,
}

#[derive(Default, Serialize, Deserialize)]
struct SendersFile {
    senders: Vec<SenderRecord>,
}

#[derive(Serialize, Deserialize)]
struct PendingCode {
    name: String,
    quota: Option<u64>,
    expires: u64,
}

/// Why a code was refused. The text goes back to the sender: it says what to do, and never
/// whether some other code exists.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PairError {
    #[error("this pairing code is unknown or was already used: ask for a new one (`lomob serve pair` on the receiver)")]
    Unknown,
    #[error("this pairing code expired (codes last 15 minutes): ask for a new one (`lomob serve pair` on the receiver)")]
    Expired,
    #[error("the receiver could not record the sender: {0}")]
    Io(String),
}

/// The senders, loaded once and kept in memory; the receiver's [`Senders`].
pub struct Registry {
    dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    senders: Vec<SenderRecord>,
    by_key: HashMap<String, usize>,
    /// Changes not yet written (a failed write); [`Registry::flush`] retries.
    dirty: bool,
    /// When `senders.json` was last read or written here: another process (`lomob serve
    /// quota`) may change it while the receiver runs.
    mtime: Option<SystemTime>,
    /// The quota of senders paired without one (`lomob serve --quota`).
    default_quota: Option<u64>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Registry {
    pub fn open(dir: &Path) -> Result<Registry, String> {
        let senders = read_senders(dir)?;
        let by_key = index(&senders);
        Ok(Registry {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                senders,
                by_key,
                dirty: false,
                default_quota: None,
                mtime: senders_mtime(dir),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut s);
        s
    }

    /// Takes in what another process wrote to `senders.json` (a quota changed), keeping the
    /// later of the two last-sync times.
    fn refresh(&self, s: &mut State) {
        let now = senders_mtime(&self.dir);
        if now == s.mtime {
            return;
        }
        s.mtime = now;
        let Ok(mut file) = read_senders(&self.dir) else {
            return;
        };
        for r in &mut file {
            if let Some(&i) = s.by_key.get(&r.access_key_id) {
                r.last_write = r.last_write.max(s.senders[i].last_write);
            }
        }
        s.by_key = index(&file);
        s.senders = file;
    }

    /// Sets the quota of senders paired without one of their own.
    pub fn set_default_quota(&self, quota: Option<u64>) {
        self.lock().default_quota = quota;
    }

    /// The quota `record` is held to.
    pub fn quota_of(&self, record: &SenderRecord) -> Option<u64> {
        record.quota.or(self.lock().default_quota)
    }

    pub fn senders(&self) -> Vec<SenderRecord> {
        self.lock().senders.clone()
    }

    /// The secret key of `access_key`, for checking signatures.
    pub fn secret_of(&self, access_key: &str) -> Option<String> {
        let s = self.lock();
        s.by_key
            .get(access_key)
            .map(|&i| s.senders[i].secret_access_key.clone())
    }

    /// Redeems a code: the sender it names gets its keys and bucket.
    pub fn redeem(&self, token: &[u8]) -> Result<SenderRecord, PairError> {
        let path = code_path(&self.dir, token);
        let text = std::fs::read(&path).map_err(|_| PairError::Unknown)?;
        // Removing the file is the redemption: of two racing requests only one succeeds.
        std::fs::remove_file(&path).map_err(|_| PairError::Unknown)?;
        let pending: PendingCode = serde_json::from_slice(&text).map_err(|_| PairError::Unknown)?;
        if pending.expires < now() {
            return Err(PairError::Expired);
        }
        let mut s = self.lock();
        let name = unique_name(&s.senders, &pending.name);
        let record = SenderRecord {
            bucket: bucket_name(&name, &s.senders),
            access_key_id: format!("LMB{}", random_text(17, UPPER)),
            secret_access_key: random_text(40, SECRET),
            name,
            quota: pending.quota,
            paired_at: now(),
            last_write: None,
        };
        s.senders.push(record.clone());
        s.by_key = index(&s.senders);
        write_senders(&self.dir, &s.senders).map_err(PairError::Io)?;
        s.mtime = senders_mtime(&self.dir);
        s.dirty = false;
        Ok(record)
    }

    /// Writes pending `last_write` times (the receiver calls it now and then and at exit).
    pub fn flush(&self) -> Result<(), String> {
        let mut s = self.lock();
        if s.dirty {
            write_senders(&self.dir, &s.senders)?;
            s.mtime = senders_mtime(&self.dir);
            s.dirty = false;
        }
        Ok(())
    }
}

impl Senders for Registry {
    fn grant(&self, access_key: &str) -> Option<Grant> {
        let s = self.lock();
        s.by_key.get(access_key).map(|&i| {
            let r = &s.senders[i];
            Grant {
                name: r.name.clone(),
                bucket: r.bucket.clone(),
                quota: r.quota.or(s.default_quota),
            }
        })
    }

    fn wrote(&self, access_key: &str) {
        let mut s = self.lock();
        let Some(&i) = s.by_key.get(access_key) else {
            return;
        };
        // To the minute, for `serve status`: the list is written at most once a minute per
        // sender, and at once after a quiet spell.
        let t = now();
        if s.senders[i]
            .last_write
            .is_some_and(|w| t.saturating_sub(w) < 60)
        {
            return;
        }
        s.senders[i].last_write = Some(t);
        match write_senders(&self.dir, &s.senders) {
            Ok(()) => {
                s.mtime = senders_mtime(&self.dir);
                s.dirty = false;
            }
            Err(e) => {
                s.dirty = true;
                tracing::warn!("cannot record the senders' last sync: {e}");
            }
        }
    }
}

/// Makes a pending code for a sender to be named `name` (made unique at redemption) with
/// `quota`, valid for `lifetime` (at most [`CODE_LIFETIME`]); returns the token the code
/// carries.
pub fn issue(
    dir: &Path,
    name: &str,
    quota: Option<u64>,
    lifetime: Duration,
) -> Result<[u8; TOKEN], String> {
    let codes = dir.join(CODES);
    std::fs::create_dir_all(&codes)
        .map_err(|e| format!("cannot create {}: {e}", codes.display()))?;
    // Old codes go as new ones are made: nothing else ever reads them.
    if let Ok(entries) = std::fs::read_dir(&codes) {
        for e in entries.flatten() {
            let stale = std::fs::read(e.path())
                .ok()
                .and_then(|t| serde_json::from_slice::<PendingCode>(&t).ok())
                .is_none_or(|p| p.expires < now());
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut token = [0u8; TOKEN];
    rand::rng().fill_bytes(&mut token);
    let pending = PendingCode {
        name: name.to_string(),
        quota,
        expires: now() + lifetime.min(CODE_LIFETIME).as_secs(),
    };
    let bytes = serde_json::to_vec(&pending).map_err(|e| e.to_string())?;
    super::tls::write_new(&code_path(dir, &token), &bytes)?;
    Ok(token)
}

/// Sets the quota of the sender named `name` (`lomob serve quota`); a running receiver
/// takes it in at its next request.
pub fn set_quota(dir: &Path, name: &str, quota: Option<u64>) -> Result<SenderRecord, String> {
    let mut senders = read_senders(dir)?;
    let Some(r) = senders.iter_mut().find(|s| s.name == name) else {
        let names: Vec<&str> = senders.iter().map(|s| s.name.as_str()).collect();
        return Err(format!(
            "no sender is named {name:?} here (paired: {}): `lomob serve status` lists them",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    r.quota = quota;
    let out = r.clone();
    write_senders(dir, &senders)?;
    Ok(out)
}

fn senders_mtime(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join(SENDERS))
        .and_then(|m| m.modified())
        .ok()
}

/// Reads the senders without opening a receiver (`serve status`).
pub fn read_senders(dir: &Path) -> Result<Vec<SenderRecord>, String> {
    let path = dir.join(SENDERS);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<SendersFile>(&b)
            .map(|f| f.senders)
            .map_err(|e| {
                format!(
                    "{} is damaged ({e}): restore it from a backup, or remove it and pair every sender again",
                    path.display()
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_senders(dir: &Path, senders: &[SenderRecord]) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(&SendersFile {
        senders: senders.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    crate::platform::file::write_atomic(dir, SENDERS, &bytes, true)
        .map_err(|e| format!("cannot write {}: {e}", dir.join(SENDERS).display()))
}

fn code_path(dir: &Path, token: &[u8]) -> PathBuf {
    dir.join(CODES)
        .join(format!("{}.json", hex::encode(Sha256::digest(token))))
}

fn index(senders: &[SenderRecord]) -> HashMap<String, usize> {
    senders
        .iter()
        .enumerate()
        .map(|(i, s)| (s.access_key_id.clone(), i))
        .collect()
}

fn unique_name(senders: &[SenderRecord], wanted: &str) -> String {
    let taken = |n: &str| senders.iter().any(|s| s.name == n);
    if !taken(wanted) {
        return wanted.to_string();
    }
    (2..)
        .map(|i| format!("{wanted}-{i}"))
        .find(|n| !taken(n))
        .unwrap_or_default()
}

/// A valid S3 bucket name from the sender's name: lower-case letters, digits and dashes,
/// 3 to 63 long, not used by another sender.
fn bucket_name(name: &str, senders: &[SenderRecord]) -> String {
    let mut b: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    b = b.trim_matches('-').chars().take(50).collect();
    if b.len() < 3 {
        b = format!("sender-{b}").trim_end_matches('-').to_string();
    }
    let base = b.clone();
    let mut i = 2;
    while senders.iter().any(|s| s.bucket == b) {
        b = format!("{base}-{i}");
        i += 1;
    }
    b
}

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_text(len: usize, alphabet: &[u8]) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_gives_each_sender_its_own_keys_and_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let t1 = issue(dir.path(), "Parents", Some(100), CODE_LIFETIME).unwrap();
        let t2 = issue(dir.path(), "Parents", None, CODE_LIFETIME).unwrap();
        let a = reg.redeem(&t1).unwrap();
        assert_eq!(reg.redeem(&t1), Err(PairError::Unknown));
        assert_eq!(reg.redeem(&[0; TOKEN]), Err(PairError::Unknown));
        let b = reg.redeem(&t2).unwrap();
        assert_eq!((a.name.as_str(), a.bucket.as_str()), ("Parents", "parents"));
        assert_eq!(
            (b.name.as_str(), b.bucket.as_str()),
            ("Parents-2", "parents-2")
        );
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_eq!(reg.grant(&a.access_key_id).unwrap().quota, Some(100));
        // The list survives a restart.
        let again = Registry::open(dir.path()).unwrap();
        assert_eq!(again.secret_of(&b.access_key_id), Some(b.secret_access_key));
    }

    #[test]
    fn a_quota_changed_by_another_process_is_taken_in() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let a = reg
            .redeem(&issue(dir.path(), "a", Some(10), CODE_LIFETIME).unwrap())
            .unwrap();
        // Within one file-time tick the change could look unchanged: step past it.
        std::thread::sleep(Duration::from_millis(20));
        set_quota(dir.path(), "a", Some(99)).unwrap();
        assert_eq!(reg.grant(&a.access_key_id).unwrap().quota, Some(99));
        assert!(set_quota(dir.path(), "nobody", None)
            .unwrap_err()
            .contains("paired: a"));
    }

    #[test]
    fn an_expired_code_is_refused_and_gone() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let t = issue(dir.path(), "x", None, CODE_LIFETIME).unwrap();
        let path = code_path(dir.path(), &t);
        let old = PendingCode {
            name: "x".into(),
            quota: None,
            expires: now() - 1,
        };
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(reg.redeem(&t), Err(PairError::Expired));
        assert_eq!(reg.redeem(&t), Err(PairError::Unknown));
    }
}

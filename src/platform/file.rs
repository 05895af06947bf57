//! File facts the manifest compares, permissions, and the I/O calls whose form differs by
//! system. Hints (read-ahead, O_NOATIME, O_DIRECT, syncfs) are Linux's; elsewhere they have
//! a counterpart where one helps (Windows' FILE_FLAG_SEQUENTIAL_SCAN and
//! FILE_FLAG_NO_BUFFERING) or do nothing, and callers ask [`HAS_SYNCFS`] before relying on
//! one flush for many files.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Which file a path is, beyond its name: the file system and the file in it. On Unix the
/// device and the inode; on Windows the volume serial number and the file index. A rename
/// keeps it, so equal sizes, times and identities across two scans mean the same file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub device: u64,
    pub inode: u64,
}

/// The identity of the file `md` describes; `path` is asked for only where the metadata
/// does not hold it (Windows opens the file, without following a link).
#[cfg(unix)]
pub fn identity(md: &Metadata, _path: impl FnOnce() -> PathBuf) -> Identity {
    use std::os::unix::fs::MetadataExt;
    Identity {
        device: md.dev(),
        inode: md.ino(),
    }
}

/// The identity of the file `md` describes; `path` is asked for only where the metadata
/// does not hold it (Windows opens the file, without following a link).
#[cfg(windows)]
pub fn identity(_md: &Metadata, path: impl FnOnce() -> PathBuf) -> Identity {
    win::identity(&path()).unwrap_or_default()
}

/// Modification time in nanoseconds since 1970 (negative before).
#[cfg(unix)]
pub fn mtime_ns(md: &Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec()
}

/// Modification time in nanoseconds since 1970 (negative before).
#[cfg(not(unix))]
pub fn mtime_ns(md: &Metadata) -> i64 {
    let Ok(t) = md.modified() else { return 0 };
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// The file's type and permission bits as POSIX `st_mode`. Windows has no mode: a regular
/// file is 0644 (0444 when read-only), a folder 0755.
#[cfg(unix)]
pub fn mode(md: &Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    md.mode()
}

/// The file's type and permission bits as POSIX `st_mode`. Windows has no mode: a regular
/// file is 0644 (0444 when read-only), a folder 0755.
#[cfg(not(unix))]
pub fn mode(md: &Metadata) -> u32 {
    let base = if md.is_dir() { 0o040_755 } else { 0o100_644 };
    if md.permissions().readonly() {
        base & !0o222
    } else {
        base
    }
}

/// The permission bits of the file at `path` when other users of the machine may read it
/// (Unix group or world bits); `None` too when it cannot be looked at. Windows files inherit
/// their folder's access list, and lomob's folders are the user's own: always `None`.
pub fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then_some(mode & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// New files only their owner may read (mode 0600 on Unix; see [`readable_by_others`] for
/// Windows).
pub fn owner_only(o: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600)
    }
    #[cfg(not(unix))]
    {
        o
    }
}

/// Opens the last component itself, never what a link points to: the call fails on a link
/// on Unix (O_NOFOLLOW); Windows opens the reparse point, not its target.
pub fn no_follow(o: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        o.custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_OPEN_REPARSE_POINT)
    }
}

/// [`owner_only`] and [`no_follow`] as methods, to chain with the other options.
pub trait PortableOpenOptions {
    fn owner_only(&mut self) -> &mut Self;
    fn no_follow(&mut self) -> &mut Self;
}

impl PortableOpenOptions for OpenOptions {
    fn owner_only(&mut self) -> &mut Self {
        owner_only(self)
    }
    fn no_follow(&mut self) -> &mut Self {
        no_follow(self)
    }
}

/// Gives a restored file its permission bits: the mode on Unix (never set-user-id); on
/// Windows only whether it is read-only (no owner write bit).
pub fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o1777))
    }
    #[cfg(not(unix))]
    {
        let mut p = file.metadata()?.permissions();
        let readonly = mode & 0o200 == 0;
        if p.readonly() != readonly {
            p.set_readonly(readonly);
            file.set_permissions(p)?;
        }
        Ok(())
    }
}

/// Whether an error says that a path component that must be a folder is a file.
pub fn is_not_a_directory(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ENOTDIR)
    }
    #[cfg(windows)]
    {
        e.raw_os_error() == Some(windows_sys::Win32::Foundation::ERROR_DIRECTORY as i32)
    }
}

/// Opens a file to read it once, in order: on Linux without updating its access time where
/// the owner may (O_NOATIME spares a metadata write per file on file systems mounted with
/// atime; others get EPERM and a plain open) and with read-ahead advised; on Windows with
/// FILE_FLAG_SEQUENTIAL_SCAN.
pub fn open_sequential(path: &Path) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME)
            .open(path)
        {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
            r => r,
        }?;
        advise(&f, Advice::Sequential);
        Ok(f)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_SEQUENTIAL_SCAN)
            .open(path)
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        File::open(path)
    }
}

/// How a file is about to be read, for the kernel's read-ahead.
#[derive(Clone, Copy, Debug)]
pub enum Advice {
    Sequential,
    WillNeed,
    DontNeed,
}

/// Tells the kernel how `f` will be read (Linux `posix_fadvise`; nothing elsewhere).
pub fn advise(f: &File, advice: Advice) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let a = match advice {
            Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
            Advice::WillNeed => libc::POSIX_FADV_WILLNEED,
            Advice::DontNeed => libc::POSIX_FADV_DONTNEED,
        };
        // SAFETY: an advisory call on an open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, a) };
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (f, advice);
    }
}

/// Opens `path` to read it from the medium rather than the page cache, with buffers, offsets
/// and lengths aligned to 4 KiB: O_DIRECT on Linux, FILE_FLAG_NO_BUFFERING on Windows.
/// Returns the file and whether it bypasses the cache. Where that is refused (tmpfs, some
/// FUSE mounts) the file's cached pages are dropped first (a written file was fsynced, so
/// they are clean) and it is opened normally.
pub fn open_uncached(path: &Path) -> io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let f = File::open(path)?;
                advise(&f, Advice::DontNeed);
                Ok((f, false))
            }
            Err(e) => Err(e),
        }
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        match OpenOptions::new()
            .read(true)
            .custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_NO_BUFFERING)
            .open(path)
        {
            Ok(f) => Ok((f, true)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
            Err(_) => Ok((File::open(path)?, false)),
        }
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        Ok((File::open(path)?, false))
    }
}

/// Creates (or truncates) `path` for writes that bypass the page cache (O_DIRECT), on Linux
/// only; `None` elsewhere, and where the file system refuses it (the caller writes through
/// the cache). Writes must be 4 KiB-aligned until [`stop_uncached`].
pub fn create_uncached(path: &Path) -> io::Result<Option<File>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
            // tmpfs and some network file systems refuse O_DIRECT.
            Err(_) => Ok(None),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Ok(None)
    }
}

/// Lets the rest of a file made by [`create_uncached`] go through the page cache (its
/// unaligned tail).
pub fn stop_uncached(file: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor the caller owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        Ok(())
    }
}

/// Whether one call ([`sync_file_system`]) makes every earlier write on a file system
/// durable. Without it, each file must be fsynced on its own.
pub const HAS_SYNCFS: bool = cfg!(target_os = "linux");

/// Makes every write on the file system holding `dir` durable, names included (a journal
/// commit): Linux `syncfs`. Elsewhere unsupported; see [`HAS_SYNCFS`].
pub fn sync_file_system(dir: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let d = File::open(dir)?;
        // SAFETY: a plain system call on a descriptor we own.
        if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no syncfs on this system",
        ))
    }
}

/// Makes the names in folder `dir` durable (a rename into it, a new file): an fsync of the
/// folder on Unix. NTFS journals its folders itself, and Windows cannot flush a folder
/// handle: nothing to do there.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Replaces `dir/name` with `bytes` in one step a crash cannot tear: written to a temporary
/// name beside it, fsynced, renamed over, and the folder synced. `private` makes the file
/// readable by its owner only (it names keys). The temporary file is removed on failure.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], private: bool) -> io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!(
        "{name}.tmp-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let result = (|| {
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        if private {
            owner_only(&mut o);
        }
        let mut f = o.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(windows)]
mod win {
    use super::Identity;
    use std::os::windows::fs::OpenOptionsExt;
    use std::os::windows::io::AsRawHandle;
    use std::path::Path;
    use windows_sys::Win32::Storage::FileSystem::{
        GetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION, FILE_FLAG_BACKUP_SEMANTICS,
        FILE_FLAG_OPEN_REPARSE_POINT,
    };

    /// Opens `path` for no access at all (folders too, links not followed) and asks for its
    /// volume serial number and file index.
    pub fn identity(path: &Path) -> std::io::Result<Identity> {
        let f = std::fs::OpenOptions::new()
            .access_mode(0)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
            .open(path)?;
        // SAFETY: plain data, filled by the call on a handle we own.
        let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
        if unsafe { GetFileInformationByHandle(f.as_raw_handle() as _, &mut info) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Identity {
            device: u64::from(info.dwVolumeSerialNumber),
            inode: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_keeps_the_identity_and_a_copy_does_not() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let id = |p: &Path| identity(&std::fs::metadata(p).unwrap(), || p.to_path_buf());
        let before = id(&a);
        let b = d.path().join("b");
        std::fs::rename(&a, &b).unwrap();
        assert_eq!(id(&b), before);
        std::fs::copy(&b, &a).unwrap();
        assert_ne!(id(&a), before);
        assert_eq!(id(&a).device, before.device);
    }

    #[test]
    fn mtime_is_nanoseconds_since_1970() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let f = File::create(&p).unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_600_000_000, 123_456_789);
        f.set_times(std::fs::FileTimes::new().set_modified(t))
            .unwrap();
        assert_eq!(
            mtime_ns(&std::fs::metadata(&p).unwrap()),
            1_600_000_000_123_456_789
        );
    }
}

//! The command line as clap sees it. The rest of the program never touches these types
//! directly: [`super::Context`] turns them into resolved settings first.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use lomob_backends::ByteSize;

/// Two-stage off-site backup for a family photo and video library.
///
/// New files go daily, one object per file, to a cheap staging store; when enough is
/// staged they are packed into large ISO 9660 images for cold storage. One manifest records
/// every file, its hashes, versions and copies.
///
/// Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 partial (some files
/// could not be read or were left alone), 4 manifest in use by another lomob process, 5 a
/// server kept failing (run again later), 6 integrity (a copy holds other bytes), 7 a
/// restore is waiting for a thaw (run the same command again later).
#[derive(Debug, Parser)]
#[command(
    name = "lomob",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Manifest database folder [default: ~/.local/share/lomob/lomob.db]
    #[arg(long, global = true, env = "LOMOB_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Configuration file(s), merged in order [default: ~/.config/lomob/config.toml if it
    /// exists, else the embedded default with one local-disk site]
    #[arg(
        long,
        global = true,
        env = "LOMOB_CONFIG",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub config: Vec<PathBuf>,

    /// Log level: 0 panic, 1 fatal, 2 error, 3 warn, 4 info, 5 debug, 6 trace, or a name
    #[arg(
        short = 'l',
        long,
        global = true,
        env = "LOMOB_LOG_LEVEL",
        value_name = "LEVEL",
        default_value = "info",
        value_parser = parse_level
    )]
    pub log_level: tracing::Level,

    /// Print machine-readable JSON (list, status and report commands)
    #[arg(long, global = true)]
    pub json: bool,

    /// Never draw progress bars, even on a terminal
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Set by the daemon on its scheduled jobs: a failure is retried before it is alerted
    #[arg(long, global = true, hide = true)]
    pub held_alerts: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daily job: scan the library, then sync every site
    Backup(BackupArgs),
    /// Stage new files on a site, pack and archive images when enough is staged
    Sync(SyncArgs),
    /// Walk the library and record new, changed and deleted files in the manifest
    Scan(ScanArgs),
    /// List what the manifest holds
    #[command(subcommand)]
    List(ListCommand),
    /// Totals of files and bytes by state, per site, and the last runs
    Status {
        /// Count the totals again from every record, report any drift from the kept
        /// counters, and store the recount (slow on a large library; `status` alone reads
        /// the counters every write keeps)
        #[arg(long)]
        recount: bool,
    },
    /// Monthly storage and request cost per site, beside one object per file
    Cost {
        /// Only this site
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
    },
    /// Export or import the manifest in its portable format
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Check that the copies are what they must be: the stage (a LIST, no download), the
    /// archive (a LIST and a HEAD per image: no GET, no thaw) and the library itself (bytes
    /// that changed under an unchanged date). With no part named, all three
    Check(CheckArgs),
    /// Bring files back from the cheapest readable copy (stage, hot image, thawed cold
    /// image) into a folder; every file is checked by its SHA-256 before it gets its name
    #[command(disable_version_flag = true)]
    Restore(RestoreArgs),
    /// Rebuild the manifest on a new machine from a site: its newest manifest snapshot, or
    /// else its image catalogs and stage listing. Never thaws or reads a cold object
    Recover(RecoverArgs),
    /// Inspect the configured sites
    #[command(subcommand)]
    Site(SiteCommand),
    /// Alerts: email, webhook and heartbeat
    #[command(subcommand)]
    Alert(AlertCommand),
    /// Pack files into ISO 9660 images, and list, verify and read images
    #[command(subcommand)]
    Iso(IsoCommand),
    /// Run in the background: watch the library, record changes as they settle, run each
    /// site's schedule; `status`, `sync`, `check`... keep working through it
    Daemon {
        #[command(subcommand)]
        action: Option<DaemonCommand>,
    },
    /// Be a receiver for relatives' backups: an S3 endpoint over HTTPS that each paired
    /// sender uses as its stage and archive (`serve pair` makes a pairing code, `serve
    /// status` shows the senders)
    Serve(ServeArgs),
    /// Start lomob with the system: a systemd unit or timer, a launchd agent, a Task
    /// Scheduler task
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Print a shell completion script (bash: `lomob completions bash >
    /// ~/.local/share/bash-completion/completions/lomob`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `lomob man > ~/.local/share/man/man1/lomob.1`
    Man,
    /// Encryption keys (age): make one, put it on paper, prove a site's recovery key works
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new age identity (mode 0600) and print its public key (the recipient to put
    /// in a site's `encryption.recipients`). LOSING IT LOSES THE DATA ENCRYPTED TO IT
    Generate {
        /// Where to write it; refused if the file exists
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Protect the file with a passphrase read from this environment variable
        #[arg(long, value_name = "VAR", conflicts_with = "protect")]
        passphrase_env: Option<String>,
        /// Protect the file with a passphrase typed twice in the terminal
        #[arg(long)]
        protect: bool,
    },
    /// Print a page to keep offline: the identity as text and as a QR code, its public key,
    /// and how to decrypt any object with the stock `age` tool
    Export {
        /// The identity file to export (or the one a site's profile names)
        #[arg(long, value_name = "FILE", required_unless_present = "site")]
        identity: Option<PathBuf>,
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
        /// The printable page (the only form there is; the flag says what you get)
        #[arg(long)]
        paper: bool,
    },
    /// Download one small encrypted object of a site and decrypt it with an identity (your
    /// recovery key): proof that it opens this site's data
    Verify {
        #[arg(long, value_name = "NAME")]
        site: String,
        /// The identity to prove (default: the one the profile names)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Run the daemon in the foreground (what `lomob daemon` alone does)
    Run,
    /// Each site's next and last runs, the watcher's state, what is in flight
    Status,
    /// Stop the running daemon (it finishes or checkpoints the transfer in flight)
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the service files for this system and say how to enable them
    Install {
        /// Print the files instead of writing them
        #[arg(long)]
        print: bool,
        /// No daemon: run `lomob backup` once a day instead (catches up after the machine
        /// was off)
        #[arg(long)]
        timer: bool,
        /// The system to write for [default: this one]
        #[arg(long, value_parser = ["systemd", "launchd", "windows"])]
        system: Option<String>,
        /// Run the receiver for relatives' backups (`lomob serve`) instead of the daemon
        #[arg(long, conflicts_with = "timer")]
        serve: bool,
        /// With --serve: the receiver's folder [default: the data folder's `serve`]
        #[arg(long, requires = "serve", value_name = "DIR")]
        serve_root: Option<PathBuf>,
        /// With --serve: the address and port it listens on
        #[arg(
            long,
            requires = "serve",
            default_value = "0.0.0.0:8443",
            value_name = "ADDR:PORT"
        )]
        listen: std::net::SocketAddr,
        /// With --serve: the quota of each sender paired without one of its own
        #[arg(long, requires = "serve", value_name = "SIZE")]
        quota: Option<ByteSize>,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Files to restore: absolute paths, paths relative to a library root, or globs (`*`,
    /// `**`, `?`, `[...]`) matching the whole path; a folder brings back what is under it
    /// [default: every file]
    #[arg(value_name = "PATH|GLOB")]
    pub paths: Vec<std::ffi::OsString>,
    /// Folder to restore into: each file goes to DIR followed by its original absolute path
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Only this site's copies [default: every site]
    #[arg(long, value_name = "NAME")]
    pub site: Option<String>,
    /// Each file as it was at this time: 2024-05-01 (the end of that day, local time),
    /// 2024-05-01T18:30 (local) or 2024-05-01T18:30:00Z
    #[arg(long, value_name = "DATE", conflicts_with = "version")]
    pub at: Option<String>,
    /// The Nth version of each file, 1 being the oldest
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub version: Option<u32>,
    /// Also the files deleted locally since they were backed up
    #[arg(long)]
    pub deleted: bool,
    /// Thaw tier for cold images [default: the site's thaw-tier, else bulk]
    #[arg(long, value_name = "TIER", value_parser = ["bulk", "standard", "expedited"])]
    pub tier: Option<String>,
    /// Wait for thaws and finish, reading each image as soon as it is thawed, instead of
    /// exiting with code 7 once they are requested
    #[arg(long)]
    pub wait: bool,
    /// Show where each file would come from, which images need a thaw, the requests and
    /// their cost; send only read-only requests and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Replace files in DIR that hold other bytes (they are left alone and listed otherwise)
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Send a test message on every configured channel and report each channel's result
    Test {
        /// Only this site's channels [default: the global [alert] and every site's own]
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The site to check
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub site: Option<String>,
    /// Every configured site
    #[arg(long)]
    pub all: bool,
    /// The stage: LIST compared with the manifest by size and the server's checksums
    #[arg(long)]
    pub stage: bool,
    /// The archive: LIST and one HEAD per image, compared with what was verified at upload
    #[arg(long)]
    pub archive: bool,
    /// The library: re-read files whose size, mtime and inode did not change, within
    /// `[library] local-budget` (5% a day by default), to find silent corruption
    #[arg(long)]
    pub local: bool,
    /// Also download staged objects (within the site's deep-budget, rotating) and read the
    /// catalogs, checking their SHA-256
    #[arg(long)]
    pub deep: bool,
    /// Stage damaged or missing objects again from local originals, delete lomob's garbage
    /// from the stage, and queue the files of a damaged image for a new one (nothing
    /// archived is ever overwritten or deleted)
    #[arg(long)]
    pub repair: bool,
    /// Print the requests a check would make and their cost; send nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The site to recover from
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub site: Option<String>,
    /// The newest snapshot across every site (catalogs of every site when none has one)
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum IsoCommand {
    /// Pack scanned files not yet in an image into images, oldest first
    Create {
        /// Name of the first image [default: <oldest file date>--<newest file date>.iso,
        /// made unique]
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// Largest image; a single larger file gets an image of its own
        #[arg(short = 's', long, default_value = "5GB", value_name = "SIZE")]
        iso_size: ByteSize,
        /// Folder the images are written to [default: ~/.local/share/lomob/isos]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The images recorded in the manifest
    List,
    /// Check every file of an image against its catalog, and against the manifest when the
    /// image is recorded there
    Verify {
        /// An image file, or the name of an image in the manifest
        #[arg(value_name = "NAME|FILE")]
        image: String,
    },
    /// The tree of an image's folders and files with their sizes: an image file (ours or
    /// any ISO 9660 image), or the name of an image in the manifest (read from its local
    /// copy, else from the manifest: nothing is downloaded)
    Dump {
        #[arg(value_name = "NAME|FILE")]
        image: String,
    },
    /// List the files inside an image file
    Ls {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Extract files from an image file; never writes outside DIR
    Extract {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Paths inside the image (files or folders) [default: everything]
        #[arg(value_name = "PATH")]
        paths: Vec<String>,
        /// Folder to extract into (created if needed)
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub scan: ScanArgs,
    /// Pack everything staged into images now, whatever each site's threshold
    #[arg(long)]
    pub pack_now: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The site to sync
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub site: Option<String>,
    /// Every configured site, a few at a time; one failing does not stop the others
    #[arg(long)]
    pub all: bool,
    /// Pack everything staged into images now, whatever the site's threshold
    #[arg(long)]
    pub pack_now: bool,
    /// Show what would be uploaded, the requests it would take and their cost; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Default, Args)]
pub struct ScanArgs {
    /// Folders to scan [default: `roots` in [library], else the roots scanned before]
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,

    /// File names to skip, comma-separated [default: .DS_Store,._.DS_Store,Thumbs.db]
    #[arg(
        long = "ignore-files",
        visible_alias = "if",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    pub ignore_files: Option<Vec<String>>,

    /// Folder names not to enter, comma-separated [default: .idea,.git,.github]
    #[arg(
        long = "ignore-dirs",
        visible_alias = "in",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    pub ignore_dirs: Option<Vec<String>>,

    /// Threads for walking and for hashing [default: number of CPU cores]
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,

    /// Record the deletions found even when there are more than `max-delete` of them in a
    /// root, or when a whole disk or mounted folder seems gone (check it is mounted first)
    #[arg(long)]
    pub allow_delete: bool,
}

#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// The folders as a tree, each with the date of the newest change in it (folders with
    /// no files of their own included)
    Dirs {
        /// A table instead: files directly in each folder, their size, the newest date, path
        #[arg(short = 't', long)]
        table_view: bool,
    },
    /// Files at least as large as a size, largest first
    Bigfiles {
        /// Smallest size listed: KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024
        #[arg(
            short = 's',
            long = "file-size",
            default_value = "50MB",
            value_name = "SIZE"
        )]
        file_size: ByteSize,
    },
    /// Files, with size, date, versions and state
    Files {
        /// Only files under this folder (absolute, or relative to a library root)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Include files that have been deleted locally (they stay backed up)
        #[arg(long)]
        deleted: bool,
        /// Only files in this state: present, deleted, staged, archived, or unsafe (present
        /// and not yet on any site, or on `--site`: neither staged nor archived there)
        #[arg(long, value_parser = ["present", "deleted", "staged", "archived", "unsafe"])]
        state: Option<String>,
        /// With --state: that site's copies only
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Write the whole manifest to FILE (portable JSON Lines, see README)
    Export {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Load FILE into an empty manifest (use --db to choose where)
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Each site: its stage and archive backends, capabilities and settings (secrets hidden)
    List,
    /// Probe a site's stage and archive: write, stat, list, read back and delete a small
    /// object (on a cold archive: list, an aborted multipart upload, and a HEAD of the
    /// newest image; nothing is stored that could not be deleted for free)
    Test {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Take over a site's locations: mark its stage and archive as this site's and this
    /// manifest's, replacing the mark of a manifest that is gone for good (a machine that
    /// replaces another). Never needed after `lomob manifest import`, which keeps the id
    Claim {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Get the refresh token of a `gdrive` or `onedrive` site: opens the provider's consent
    /// page (OAuth 2.0 for installed apps, PKCE, a redirect to 127.0.0.1), saves the token
    /// to the file the profile names (mode 0600), then runs `site test`
    Auth(SiteAuthArgs),
    /// Pair with a relative's receiver (`lomob serve`): redeem the one-time code it
    /// printed, write the site (stage and archive on the receiver, its certificate pinned,
    /// the secret key in a file beside the profile, encrypted with your age key), then run
    /// `site test`
    Pair(SitePairArgs),
}

#[derive(Debug, Args)]
pub struct SitePairArgs {
    /// The new site's name (`parents`)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The code `lomob serve pair` printed on the receiver
    #[arg(value_name = "CODE")]
    pub code: String,
    /// The profile to add the site to [default: the first --config file, else
    /// ~/.config/lomob/config.toml]
    #[arg(long, value_name = "PATH")]
    pub profile: Option<PathBuf>,
    /// Store plain files on the receiver instead of age ciphertext (not advised: the
    /// relative, and whoever gets at their disk, could read every photo)
    #[arg(long)]
    pub no_encryption: bool,
    /// The age identity file to encrypt to and decrypt with [default: the one another
    /// encrypted site uses, else a new one beside the profile]
    #[arg(long, value_name = "PATH")]
    pub identity: Option<PathBuf>,
    /// Do not run `lomob site test NAME` afterwards
    #[arg(long)]
    pub no_test: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(subcommand)]
    pub action: Option<ServeCommand>,
    /// The folder that holds what senders store and the receiver's own state (its
    /// certificate, the paired senders) [default: the data folder's `serve`]
    #[arg(long, global = true, env = "LOMOB_SERVE_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Address and port to listen on (HTTPS)
    #[arg(long, default_value = "0.0.0.0:8443", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// The quota of each sender paired without one of its own
    #[arg(long, value_name = "SIZE")]
    pub quota: Option<ByteSize>,
}

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Print a one-time code (valid 15 minutes) that pairs one sender: give it to the
    /// person who runs `lomob site pair NAME CODE`
    Pair {
        /// A name for the sender (`serve status` shows it; its bucket is named after it)
        #[arg(long, default_value = "sender")]
        name: String,
        /// Most this sender may store here [default: the receiver's --quota, else none]
        #[arg(long, value_name = "SIZE")]
        quota: Option<ByteSize>,
        /// The address senders reach this receiver at, HOST or HOST:PORT [default: the
        /// receiver's listening address, with this machine's LAN address for 0.0.0.0]
        #[arg(long, value_name = "HOST[:PORT]")]
        address: Option<String>,
        /// How long the code stays valid (at most 15m)
        #[arg(long, default_value = "15m", value_name = "DURATION")]
        valid_for: crate::config::Period,
    },
    /// The paired senders, what each stores and when it last synced, and the free space
    Status,
    /// Change a paired sender's quota (a running receiver applies it at once)
    Quota {
        /// The sender's name, as `serve status` shows it
        #[arg(value_name = "NAME")]
        name: String,
        /// The new quota, or `none` for the receiver's --quota (else no limit)
        #[arg(value_name = "SIZE|none")]
        size: String,
    },
}

#[derive(Debug, Args)]
pub struct SiteAuthArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Do not run `lomob site test NAME` afterwards
    #[arg(long)]
    pub no_test: bool,
    /// Longest wait for the browser to come back, in seconds
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout_secs: u64,
    /// The provider's authorization endpoint (tests point it at a local server)
    #[arg(long, hide = true, env = "LOMOB_OAUTH_AUTH_URL")]
    pub auth_url: Option<String>,
    /// The provider's token endpoint (tests point it at a local server)
    #[arg(long, hide = true, env = "LOMOB_OAUTH_TOKEN_URL")]
    pub token_url: Option<String>,
}

/// Accepts 0-6 as the original tool did, or a level name.
fn parse_level(s: &str) -> Result<tracing::Level, String> {
    use tracing::Level;
    Ok(match s.to_ascii_lowercase().as_str() {
        "0" | "panic" | "1" | "fatal" | "2" | "error" => Level::ERROR,
        "3" | "warn" | "warning" => Level::WARN,
        "4" | "info" => Level::INFO,
        "5" | "debug" => Level::DEBUG,
        "6" | "trace" => Level::TRACE,
        _ => {
            return Err(format!(
                "unknown log level {s:?}: use 0-6 or panic, fatal, error, warn, info, debug, trace"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn levels_parse_as_numbers_and_names() {
        assert_eq!(parse_level("4").unwrap(), tracing::Level::INFO);
        assert_eq!(parse_level("Trace").unwrap(), tracing::Level::TRACE);
        assert_eq!(parse_level("0").unwrap(), tracing::Level::ERROR);
        assert!(parse_level("7").is_err());
    }
}

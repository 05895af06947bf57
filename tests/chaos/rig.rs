//! What every chaos test stands on: the seed and its generator, the tally of faults and
//! checks that ends up in RELIABILITY.md, a library whose expected contents are known
//! (regenerated from seeds rather than kept in memory), and the sites on the test servers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{service_var, set_mtime, unique, Env};

/// The seed, the generator drawn from it, and what the run counted.
pub struct Chaos {
    pub name: &'static str,
    pub seed: u64,
    pub rng: StdRng,
    pub iterations: usize,
    pub tally: Tally,
}

/// Figures for RELIABILITY.md.
#[derive(Default, Debug)]
pub struct Tally {
    pub iterations: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// How the runs under faults ended, by command and exit code.
    pub outcomes: BTreeMap<String, u64>,
    /// Files restored and compared byte for byte with what the library held.
    pub files_checked: u64,
    /// Files missing or different after a restore: must stay 0.
    pub files_lost: u64,
    /// Multipart uploads found open after a completed run: must stay 0.
    pub open_uploads: u64,
    pub restores: u64,
    pub restore_requests: u64,
    pub restore_usd: f64,
}

impl Chaos {
    /// Reads `LOMOB_CHAOS_SEED` (else a fresh one) and `LOMOB_CHAOS_ITERATIONS` (else
    /// `short`), and prints how to replay. Each test mixes its name into the seed, so one
    /// seed replays a whole run yet the tests do not draw the same faults.
    pub fn start(name: &'static str, short: usize) -> Chaos {
        let seed = std::env::var("LOMOB_CHAOS_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| rand::rng().random_range(1..1_000_000_000u64));
        // `LOMOB_CHAOS_ITERATIONS_KILL` and the like set one test's count.
        let iterations = [
            format!("LOMOB_CHAOS_ITERATIONS_{}", name.to_uppercase()),
            "LOMOB_CHAOS_ITERATIONS".to_string(),
        ]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
        .unwrap_or(short);
        let mixed = name
            .bytes()
            .fold(seed, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        eprintln!(
            "chaos {name}: seed {seed}, {iterations} iteration(s); replay with LOMOB_CHAOS_SEED={seed} cargo test --test chaos {name}"
        );
        Chaos {
            name,
            seed,
            rng: StdRng::seed_from_u64(mixed),
            iterations,
            tally: Tally::default(),
        }
    }

    pub fn fault(&mut self, kind: &str) {
        *self.tally.faults.entry(kind.to_string()).or_default() += 1;
    }

    /// Prints the tally and appends it as one JSON line to `LOMOB_CHAOS_REPORT`.
    pub fn finish(self) {
        let t = &self.tally;
        let line = serde_json::json!({
            "test": self.name,
            "seed": self.seed,
            "iterations": t.iterations,
            "faults": t.faults,
            "outcomes": t.outcomes,
            "files_checked": t.files_checked,
            "files_lost": t.files_lost,
            "open_uploads": t.open_uploads,
            "restores": t.restores,
            "restore_requests": t.restore_requests,
            "restore_usd": t.restore_usd,
        });
        eprintln!("chaos {}: {line}", self.name);
        if let Ok(path) = std::env::var("LOMOB_CHAOS_REPORT") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            writeln!(f, "{line}").unwrap();
        }
        assert_eq!(t.files_lost, 0, "files were lost (seed {})", self.seed);
        assert_eq!(t.open_uploads, 0, "uploads left open (seed {})", self.seed);
    }
}

/// Faults counted by kind from the proxies' threads, added to the tally at the end.
#[derive(Default)]
pub struct FaultCounts(std::sync::Mutex<BTreeMap<String, u64>>);

impl FaultCounts {
    pub fn count(&self, kind: &str) {
        *self.0.lock().unwrap().entry(kind.to_string()).or_default() += 1;
    }

    pub fn add_to(&self, c: &mut Chaos) {
        for (kind, n) in self.0.lock().unwrap().iter() {
            *c.tally.faults.entry(kind.clone()).or_default() += n;
        }
    }
}

/// Deterministic bytes for a file: its seed and length say everything about it.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One file as the library should hold it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expected {
    pub seed: u64,
    pub len: usize,
    pub mtime: i64,
}

/// The library folder and what each of its files must hold; files deleted locally keep
/// their last contents here, since `restore --deleted` must still bring them back.
pub struct Library {
    pub root: PathBuf,
    pub present: BTreeMap<String, Expected>,
    pub gone: BTreeMap<String, Expected>,
    next: u64,
    clock: i64,
}

impl Library {
    pub fn new(root: PathBuf) -> Library {
        std::fs::create_dir_all(&root).unwrap();
        Library {
            root,
            present: BTreeMap::new(),
            gone: BTreeMap::new(),
            next: 1,
            clock: 1_600_000_000,
        }
    }

    pub fn write(&mut self, rel: &str, len: usize) {
        // Every write gets a later date, as a camera or a copy would give it.
        self.clock += 60;
        let e = Expected {
            seed: self.next,
            len,
            mtime: self.clock,
        };
        self.next += 1;
        self.put(rel, e);
        self.gone.remove(rel);
        self.present.insert(rel.to_string(), e);
    }

    fn put(&self, rel: &str, e: Expected) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content(e.seed, e.len)).unwrap();
        set_mtime(&p, e.mtime);
    }

    /// Writes the files under `folder` again as they were (a disk mounted again).
    pub fn put_back(&self, folder: &str) {
        for (rel, e) in self.present.range(format!("{folder}/")..) {
            if !rel.starts_with(&format!("{folder}/")) {
                break;
            }
            self.put(rel, *e);
        }
    }

    /// A day's worth of change: `new` new files (mostly photos, now and then a video of a
    /// few MB), one changed and one deleted now and then.
    pub fn change(&mut self, rng: &mut StdRng, new: usize) {
        // Only files an earlier backup saw are changed or deleted: a file deleted before any
        // backup saw it was never lomob's to keep.
        let old: Vec<String> = self.present.keys().cloned().collect();
        for _ in 0..new {
            let len = match rng.random_range(0..20) {
                0 => rng.random_range(3_000_000..7_000_000),
                1 => 0,
                _ => rng.random_range(1_000..900_000),
            };
            let rel = format!(
                "{}/IMG_{:05}.{}",
                2000 + rng.random_range(0..6),
                self.next,
                ["jpg", "heic", "mov", "dng"][rng.random_range(0..4)]
            );
            self.write(&rel, len);
        }
        if old.len() > 4 && rng.random_bool(0.5) {
            let rel = old[rng.random_range(0..old.len())].clone();
            let len = rng.random_range(1_000..900_000);
            self.write(&rel, len);
        } else if old.len() > 4 && rng.random_bool(0.4) {
            let rel = old[rng.random_range(0..old.len())].clone();
            std::fs::remove_file(self.root.join(&rel)).unwrap();
            let e = self.present.remove(&rel).unwrap();
            self.gone.insert(rel, e);
        }
    }

    /// Every file `restore --deleted` must bring back, with what it must hold.
    pub fn expected(&self) -> BTreeMap<String, Expected> {
        let mut all = self.gone.clone();
        all.extend(self.present.iter().map(|(k, v)| (k.clone(), *v)));
        all
    }
}

/// Where the sites of a chaos run keep their objects, for checking them from outside.
pub struct Sites {
    pub moto: String,
    /// Site name and its Deep Archive bucket on moto.
    pub archive_buckets: Vec<(String, String)>,
    /// Buckets used as stages.
    pub stage_buckets: Vec<String>,
    /// Folders the SFTP server writes to (it is this machine).
    pub sftp_dirs: Vec<PathBuf>,
    pub names: Vec<String>,
}

/// The test environment, the library and the profile of a chaos run.
pub struct Rig {
    pub env: Env,
    pub lib: Library,
    pub cfg: String,
    pub sites: Sites,
}

/// How a chaos site reaches moto and sshd: straight, or through the fault proxies.
pub struct Endpoints {
    pub moto: String,
    pub sftp_port: String,
}

impl Rig {
    /// Three sites over the servers, or None (with a note) when they are not running:
    /// `deep` (stage on moto, Deep Archive images as multipart uploads in 5 MiB parts),
    /// `vault` (stage on local disk, Deep Archive images as single PUTs) and `friend` (stage
    /// and archive over SFTP). Small thresholds, so images are made every few iterations.
    pub fn new(endpoints: impl FnOnce(&str, &str) -> Endpoints) -> Option<Rig> {
        let moto = service_var("LOMOB_TEST_MOTO_ENDPOINT")?;
        let host = service_var("LOMOB_TEST_SFTP_HOST")?;
        let port = service_var("LOMOB_TEST_SFTP_PORT")?;
        let user = service_var("LOMOB_TEST_SFTP_USER")?;
        let key = service_var("LOMOB_TEST_SFTP_KEY")?;
        let home = service_var("LOMOB_TEST_SFTP_ROOT")?;
        let env = Env::new();
        let tag = unique(&env);
        let root = env.path().display().to_string();
        let ep = endpoints(&moto, &port);
        let (deep_stage, deep_arch, vault_arch) = (
            format!("ds-{tag}"),
            format!("da-{tag}"),
            format!("va-{tag}"),
        );
        for b in [&deep_stage, &deep_arch, &vault_arch] {
            crate::support::make_bucket(&moto, "k", "s", b);
        }
        let remote = format!("{home}/chaos-{tag}");
        let sftp = |dir: &str| {
            format!(
                "{{ kind = \"sftp\", host = \"{host}:{}\", user = \"{user}\", key = \"{key}\", root = \"{remote}/{dir}\", known-hosts = \"accept\" }}",
                ep.sftp_port
            )
        };
        let s3 = |bucket: &str, kind: &str, extra: &str| {
            format!(
                "{{ kind = \"{kind}\", bucket = \"{bucket}\", endpoint = \"{}\", access-key-id = \"k\", secret-access-key = \"s\"{extra} }}",
                ep.moto
            )
        };
        let transfer = "retries = 3\ntimeout-secs = 4\nconcurrency = 4\n";
        let text = format!(
            "[library]\nroots = [\"{root}/lib\"]\n\n\
             [sites.deep]\npack-threshold = \"6MB\"\niso-size = \"12MB\"\nstage = {}\narchive = {}\n\
             [sites.deep.transfer]\n{transfer}\n\
             [sites.vault]\npack-threshold = \"8MB\"\niso-size = \"10MB\"\nstage = {{ kind = \"fs\", root = \"{root}/vault-stage\" }}\narchive = {}\n\
             [sites.vault.transfer]\n{transfer}\n\
             [sites.friend]\npack-threshold = \"5MB\"\niso-size = \"8MB\"\nstage = {}\narchive = {}\n\
             [sites.friend.transfer]\n{transfer}\n",
            s3(&deep_stage, "s3", ""),
            s3(
                &deep_arch,
                "glacier",
                ", part-size = \"5MiB\", single-put-max = \"0\""
            ),
            s3(&vault_arch, "glacier", ""),
            sftp("stage"),
            sftp("archive"),
        );
        let cfg = env.config(&text);
        std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let lib = Library::new(env.lib());
        Some(Rig {
            env,
            lib,
            cfg,
            sites: Sites {
                moto,
                archive_buckets: vec![("deep".into(), deep_arch), ("vault".into(), vault_arch)],
                stage_buckets: vec![deep_stage],
                sftp_dirs: vec![
                    PathBuf::from(format!("{remote}/stage")),
                    PathBuf::from(format!("{remote}/archive")),
                ],
                names: vec!["deep".into(), "vault".into(), "friend".into()],
            },
        })
    }

    /// `lomob --config CFG ARGS --json --no-progress`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.env.std_cmd();
        c.arg("--config")
            .arg(&self.cfg)
            .args(args)
            .args(["--json", "--no-progress"]);
        c
    }

    /// The same, run to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs `args` until it succeeds: a run may fail for a server that is still failing,
    /// but never with a panic, and never more than a few times once the faults are off.
    pub fn until_ok(&self, args: &[&str]) -> serde_json::Value {
        for attempt in 0..4 {
            let out = self.run(args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "lomob {args:?} panicked:\n{err}");
            if out.status.success() {
                return serde_json::from_slice(&out.stdout).unwrap_or_default();
            }
            // With --json, a site's own error is in the report on stdout, not on stderr.
            eprintln!(
                "chaos: lomob {args:?} failed (attempt {attempt}, exit {:?}):\n{err}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        panic!("lomob {args:?} kept failing with the faults off");
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.env.path().join(name)
    }
}

impl Drop for Rig {
    /// With `LOMOB_CHAOS_KEEP=DIR`, a failed test leaves its folder (library, manifest,
    /// profile, local stages) in DIR for a look; the servers keep their buckets anyway.
    fn drop(&mut self) {
        if let (true, Some(keep)) = (
            std::thread::panicking(),
            std::env::var_os("LOMOB_CHAOS_KEEP"),
        ) {
            let _ = std::fs::remove_dir_all(&keep);
            let _ = std::process::Command::new("cp")
                .arg("-a")
                .arg(self.env.path())
                .arg(&keep)
                .status();
            eprintln!(
                "chaos: the failed run's folder is kept in {}",
                keep.to_string_lossy()
            );
        }
    }
}

/// Sends SIGKILL to a child and reaps it; true when it was still running.
pub fn kill9(child: &mut Child) -> bool {
    let running = child.try_wait().unwrap().is_none();
    // SAFETY: a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    running
}

/// Waits for a child at most `limit`; kills it and fails the test when it hangs.
pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            kill9(child);
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Every file under `dir`, relative, as `/`-joined strings.
pub fn files(dir: &Path) -> Vec<String> {
    crate::support::files_under(dir)
}

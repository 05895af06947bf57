//! What users read when they get something wrong: every profile error and every usage
//! error, as snapshots (`tests/snapshots/`), so a change of wording is seen and reviewed.
//! Temporary paths are replaced by `[TMP]`.

use crate::support::Env;

/// Runs lomob with `args` and returns "exit N" and its stderr, paths masked.
fn run(env: &Env, args: &[&str]) -> String {
    let out = env.cmd().args(args).output().unwrap();
    format!(
        "exit {}\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn masked(env: &Env, text: &str) -> String {
    text.replace(&env.path().display().to_string(), "[TMP]")
}

/// The error a profile gives, as `lomob site list` shows it.
fn profile(text: &str) -> String {
    profile_run(text.as_bytes(), &["site", "list"])
}

/// The error a profile (any bytes) gives when lomob runs `args` with it.
fn profile_run(bytes: &[u8], args: &[&str]) -> String {
    let env = Env::new();
    let p = env.path().join("profile.toml");
    let tmp = env.path().display().to_string();
    let bytes = match std::str::from_utf8(bytes) {
        Ok(text) => text.replace("{TMP}", &tmp).into_bytes(),
        Err(_) => bytes.to_vec(),
    };
    std::fs::write(&p, bytes).unwrap();
    let mut all = vec!["--config", p.to_str().unwrap()];
    all.extend_from_slice(args);
    masked(&env, &run(&env, &all))
}

#[test]
fn profile_errors() {
    let cases = [
        ("unknown_key", "[library]\nrootz = []\n"),
        ("wrong_type", "[library]\nthreads = \"many\"\n"),
        (
            "unknown_backend_kind",
            "[sites.a]\nstage = { kind = \"ftp\", root = \"/x\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "missing_stage",
            "[sites.a]\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "bad_site_name",
            "[sites.\"my site\"]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "threshold_above_quota",
            "[sites.b2]\npack-threshold = \"20GB\"\nstage = { kind = \"s3\", bucket = \"b\", free-quota = \"10GB\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "tiny_iso_size",
            "[sites.a]\niso-size = \"10KB\"\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "short_retention",
            "[sites.a]\nstage-retention-days = 1\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "shared_location",
            "[sites.a]\nstage = { kind = \"fs\", root = \"{TMP}/nas\" }\narchive = { kind = \"fs\", root = \"{TMP}/a\" }\n[sites.b]\nstage = { kind = \"fs\", root = \"{TMP}/nas/b\" }\narchive = { kind = \"fs\", root = \"{TMP}/b\" }\n",
        ),
        (
            "half_a_key_pair",
            "[sites.a]\nstage = { kind = \"s3\", bucket = \"b\", access-key-id = \"AKIA\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "bad_endpoint",
            "[sites.a]\nstage = { kind = \"s3\", bucket = \"b\", endpoint = \"s3.example.com\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "part_size_out_of_range",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"glacier\", bucket = \"b\", part-size = \"1MiB\" }\n",
        ),
        (
            "email_without_smtp",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.alert]\nemail = [\"me@example.com\"]\n",
        ),
        (
            "bad_schedule",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.schedule]\nsync = \"daily 25:00\"\n",
        ),
        ("not_toml", "[library\nroots = 3"),
        // The reliability suite (#15): the mistakes people make, each with a message that
        // names the file, the key or the path, and says what to do.
        (
            "missing_archive",
            "[sites.x]\nstage = { kind = \"fs\", root = \"/s\" }\n",
        ),
        (
            "size_with_junk",
            "[sites.a]\niso-size = \"5 GB banana\"\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "negative_threshold",
            "[sites.a]\npack-threshold = -5\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "iso_size_beyond_iso9660",
            "[sites.a]\niso-size = \"50TB\"\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "unknown_storage_class",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"glacier\", bucket = \"b\", storage-class = \"DEEP_GLACIER\" }\n",
        ),
        (
            "thaw_tier_fast",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"glacier\", bucket = \"b\", thaw-tier = \"fast\" }\n",
        ),
        (
            "thaw_days_zero",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"glacier\", bucket = \"b\", thaw-days = 0 }\n",
        ),
        (
            "secret_wrong_shape",
            "[sites.a]\nstage = { kind = \"s3\", bucket = \"b\", access-key-id = { environment = \"B2_KEY_ID\" }, secret-access-key = { env = \"B2_KEY\" } }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            // The value must not be echoed: it is the secret, mistyped.
            "secret_as_number",
            "[sites.a]\nstage = { kind = \"s3\", bucket = \"b\", access-key-id = { env = \"B2_KEY_ID\" }, secret-access-key = 8675309123 }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "duplicate_table",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a]\niso-size = \"1GB\"\n",
        ),
        (
            "duplicate_key",
            "[sites.a]\niso-size = \"1GB\"\niso-size = \"2GB\"\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        ("relative_root", "[library]\nroots = [\"Pictures\"]\n"),
        ("roots_not_a_list", "[library]\nroots = \"~/Pictures\"\n"),
        ("threads_zero", "[library]\nthreads = 0\n"),
        (
            "concurrency_zero",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.transfer]\nconcurrency = 0\n",
        ),
        (
            "timeout_zero",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.transfer]\ntimeout-secs = 0\n",
        ),
        (
            "bandwidth_fast",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.transfer]\nbandwidth-limit = \"fast\"\n",
        ),
        (
            "bandwidth_zero",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.transfer]\nbandwidth-limit = 0\n",
        ),
        ("sites_at_once_zero", "[daemon]\nsites-at-once = 0\n"),
        (
            "bad_recipient",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.encryption]\nrecipients = [\"age1xyz\"]\n",
        ),
        (
            "secret_key_as_recipient",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.encryption]\nrecipients = [\"AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\"]\n",
        ),
        (
            "sftp_without_host",
            "[sites.a]\nstage = { kind = \"sftp\", user = \"me\", root = \"/backup\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "sftp_relative_root",
            "[sites.a]\nstage = { kind = \"sftp\", host = \"nas.local\", user = \"me\", root = \"backup\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "webdav_not_http",
            "[sites.a]\nstage = { kind = \"webdav\", endpoint = \"ftp://nas.local\" }\narchive = { kind = \"fs\", root = \"/a\" }\n",
        ),
        (
            "check_on_change",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.schedule]\ncheck-stage = \"on-change\"\n",
        ),
        (
            "monthly_day_31",
            "[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n[sites.a.schedule]\ncheck-archive = \"monthly 31 04:00\"\n",
        ),
        (
            "smtp_port_out_of_range",
            "[alert]\nemail = [\"me@example.com\"]\nsmtp-host = \"mail.example.com\"\nsmtp-port = 99999\n",
        ),
    ];
    for (name, text) in cases {
        insta::assert_snapshot!(format!("profile_{name}"), profile(text), text);
    }
}

/// Profiles whose mistake shows only when a command needs what is wrong (a secret, an
/// identity), or that are not text at all. No network: each fails before a request.
#[test]
fn profile_errors_when_used() {
    const LATIN1: &[u8] =
        b"[library]\nroots = [\"/photos/caf\xe9\"]\n[sites.a]\nstage = { kind = \"fs\", root = \"/s\" }\narchive = { kind = \"fs\", root = \"/a\" }\n";
    let cases: [(&str, &[u8], &[&str]); 4] = [
        (
            "secret_env_unset",
            b"[sites.a]\nstage = { kind = \"s3\", bucket = \"b\", endpoint = \"http://127.0.0.1:9\", access-key-id = { env = \"LOMOB_TEST_UNSET_KEY_ID\" }, secret-access-key = { env = \"LOMOB_TEST_UNSET_KEY\" } }\narchive = { kind = \"fs\", root = \"{TMP}/a\" }\n",
            &["site", "test", "a"],
        ),
        (
            "secret_file_missing",
            b"[sites.a]\nstage = { kind = \"s3\", bucket = \"b\", endpoint = \"http://127.0.0.1:9\", access-key-id = { file = \"{TMP}/no-such-key-id\" }, secret-access-key = { file = \"{TMP}/no-such-key\" } }\narchive = { kind = \"fs\", root = \"{TMP}/a\" }\n",
            &["site", "test", "a"],
        ),
        (
            "identity_file_missing",
            b"[sites.a]\nstage = { kind = \"fs\", root = \"{TMP}/s\" }\narchive = { kind = \"fs\", root = \"{TMP}/a\" }\n[sites.a.encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\nidentity = { file = \"{TMP}/no-such-identity.txt\" }\n",
            &["key", "verify", "--site", "a"],
        ),
        ("not_utf8", LATIN1, &["site", "list"]),
    ];
    for (name, bytes, args) in cases {
        insta::assert_snapshot!(
            format!("profile_{name}"),
            profile_run(bytes, args),
            &format!(
                "{} | lomob {}",
                String::from_utf8_lossy(bytes),
                args.join(" ")
            )
        );
    }
}

#[test]
fn usage_errors() {
    let env = Env::new();
    let cases: [(&str, &[&str]); 9] = [
        ("sync_without_site", &["sync"]),
        ("sync_unknown_site", &["sync", "--site", "nowhere"]),
        ("unknown_command", &["frobnicate"]),
        ("bad_log_level", &["-l", "9", "status"]),
        ("iso_size_too_small", &["iso", "create", "-s", "10KB"]),
        (
            "missing_config_file",
            &["--config", "/no/such/lomob.toml", "status"],
        ),
        ("cost_unknown_site", &["cost", "--site", "nowhere"]),
        ("site_test_unknown", &["site", "test", "nowhere"]),
        ("threads_zero", &["scan", "-t", "0"]),
    ];
    for (name, args) in cases {
        insta::assert_snapshot!(
            format!("usage_{name}"),
            masked(&env, &run(&env, args)),
            &args.join(" ")
        );
    }
}

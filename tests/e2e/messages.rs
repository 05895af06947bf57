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
    let env = Env::new();
    let p = env.path().join("profile.toml");
    std::fs::write(&p, text.replace("{TMP}", &env.path().display().to_string())).unwrap();
    masked(
        &env,
        &run(&env, &["--config", p.to_str().unwrap(), "site", "list"]),
    )
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
    ];
    for (name, text) in cases {
        insta::assert_snapshot!(format!("profile_{name}"), profile(text), text);
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

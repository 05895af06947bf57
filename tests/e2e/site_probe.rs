//! End-to-end tests of `lomob site test`: each step reported, a cold archive probed without
//! storing anything, and distinct messages for wrong credentials, a missing bucket and an
//! unreachable host.

use crate::support::{assert_code, make_bucket as bucket, service_var, stdout, unique, Env};

fn cfg(env: &Env, text: &str) -> String {
    let p = env.path().join("config.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn a_local_site_passes_every_step() {
    let env = Env::new();
    let out = env.cmd().args(["site", "test", "local"]).output().unwrap();
    assert_code(&out, 0);
    let text = stdout(&out);
    for step in ["write", "stat", "list", "read", "delete"] {
        assert!(text.contains(step), "{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn a_cold_archive_is_probed_without_storing_anything() {
    let Some(ep) = service_var("LOMOB_TEST_MOTO_ENDPOINT") else {
        return;
    };
    let env = Env::new();
    let b = format!("cold-{}", unique(&env));
    bucket(&ep, "k", "s", &b);
    let root = env.path().display();
    let c = cfg(
        &env,
        &format!(
            "[sites.g]\nstage = {{ kind = \"fs\", root = \"{root}/s\" }}\narchive = {{ kind = \"glacier\", bucket = \"{b}\", endpoint = \"{ep}\", access-key-id = \"k\", secret-access-key = \"s\" }}\n"
        ),
    );
    let v = env.json(&["--config", &c, "site", "test", "g"], 0);
    let steps: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["role"] == "archive")
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect();
    // "owner": the site mark (meta/site.json) is read, not written, by a probe.
    assert_eq!(steps, ["owner", "list", "write", "class"], "{v}");
    assert!(v.to_string().contains("aborted"), "{v}");
    // Nothing was left in the bucket.
    let out = env
        .cmd()
        .args(["--config", &c, "site", "test", "g"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("0 objects under archive/"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn wrong_keys_a_missing_bucket_and_an_unreachable_host_are_told_apart() {
    let Some(ep) = service_var("LOMOB_TEST_RCLONE_S3_ENDPOINT") else {
        return;
    };
    let key = service_var("LOMOB_TEST_RCLONE_S3_KEY").unwrap();
    let secret = service_var("LOMOB_TEST_RCLONE_S3_SECRET").unwrap();
    let env = Env::new();
    let b = format!("probe-{}", unique(&env));
    bucket(&ep, &key, &secret, &b);
    let root = env.path().display();
    let site = |name: &str, stage: String| {
        format!("[sites.{name}]\nstage = {stage}\narchive = {{ kind = \"fs\", root = \"{root}/{name}-a\" }}\n[sites.{name}.transfer]\nretries = 1\ntimeout-secs = 5\n")
    };
    let c = cfg(
        &env,
        &[
            site("ok", format!("{{ kind = \"s3\", bucket = \"{b}\", prefix = \"/ok\", endpoint = \"{ep}\", access-key-id = \"{key}\", secret-access-key = \"{secret}\" }}")),
            site("badkey", format!("{{ kind = \"s3\", bucket = \"{b}\", prefix = \"/badkey\", endpoint = \"{ep}\", access-key-id = \"{key}\", secret-access-key = \"WRONGSECRET\" }}")),
            site("nobucket", format!("{{ kind = \"s3\", bucket = \"{b}-missing\", endpoint = \"{ep}\", access-key-id = \"{key}\", secret-access-key = \"{secret}\" }}")),
            site("nohost", format!("{{ kind = \"s3\", bucket = \"{b}\", endpoint = \"http://127.0.0.1:9\", access-key-id = \"{key}\", secret-access-key = \"{secret}\" }}")),
        ]
        .concat(),
    );
    let out = env
        .cmd()
        .args(["--config", &c, "site", "test", "ok"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    for (name, want) in [
        ("badkey", "secret key does not match"),
        ("nobucket", "does not exist"),
        ("nohost", "could not be reached"),
    ] {
        let out = env
            .cmd()
            .args(["--config", &c, "site", "test", name])
            .output()
            .unwrap();
        assert_code(&out, 1);
        let text = stdout(&out);
        assert!(text.contains(&format!("site {name}")), "{text}");
        assert!(text.contains(want), "{name}: {text}");
        assert!(!text.contains("WRONGSECRET"), "{text}");
    }
}

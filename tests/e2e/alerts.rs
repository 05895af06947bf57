//! End-to-end tests of alerts: mail through aiosmtpd (plain SMTP to a relay without
//! authentication, and STARTTLS with a certificate from a test CA), a webhook and heartbeat
//! receiver (start, success, fail), repeats and "resolved" under an injected clock, a site
//! not synced for too long, `lomob alert test`, and secrets kept out of every output.

use std::path::PathBuf;

use crate::support::{bytes, mails_to, put, service_var, unique, walk, Env, HookServer, NS};

/// A local-disk site and the alert section `alert` (TOML lines).
fn site(env: &Env, alert: &str) -> String {
    let root = env.path().display().to_string();
    put(env, b"a.jpg", &bytes(1, 20_000), 1_600_000_000 * NS);
    put(env, b"b.jpg", &bytes(2, 20_000), 1_600_000_100 * NS);
    env.config(&format!(
        "[library]\nroots = [\"{root}/lib\"]\n[alert]\n{alert}\n[sites.b]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n"
    ))
}

fn damage_stage(env: &Env) -> PathBuf {
    let victim = walk(&env.path().join("stage/stage"))
        .into_iter()
        .min()
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    victim
}

#[test]
fn a_check_finding_is_mailed_through_a_relay_without_authentication() {
    let (Some(host), Some(port), Some(maildir)) = (
        service_var("LOMOB_TEST_SMTP_HOST"),
        service_var("LOMOB_TEST_SMTP_PORT"),
        service_var("LOMOB_TEST_SMTP_MAILDIR"),
    ) else {
        return;
    };
    let env = Env::new();
    let to = format!("family-{}@example.com", unique(&env));
    let cfg = site(
        &env,
        &format!("email = [\"{to}\"]\nsmtp-host = \"{host}\"\nsmtp-port = {port}\nsmtp-security = \"none\""),
    );
    env.json(&["--config", &cfg, "backup"], 0);
    let victim = damage_stage(&env);
    env.json(&["--config", &cfg, "check", "--site", "b", "--stage"], 6);
    let mails = mails_to(&PathBuf::from(&maildir), &to);
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(
        mail.contains("Subject: lomob: 1 problem on site b (stage check)"),
        "{mail}"
    );
    let key = format!("stage/{}", victim.file_name().unwrap().to_string_lossy());
    assert!(mail.contains(&key), "{mail}");
    assert!(
        mail.contains("fix: lomob check --site b --stage --repair"),
        "{mail}"
    );
}

#[test]
fn mail_over_starttls_trusts_the_configured_ca_and_only_it() {
    let (Some(port), Some(maildir), Some(ca)) = (
        service_var("LOMOB_TEST_SMTP_TLS_PORT"),
        service_var("LOMOB_TEST_SMTP_TLS_MAILDIR"),
        service_var("LOMOB_TEST_SMTP_CA"),
    ) else {
        return;
    };
    let env = Env::new();
    let to = format!("tls-{}@example.com", unique(&env));
    let base = format!(
        "email = [\"{to}\"]\nsmtp-host = \"127.0.0.1\"\nsmtp-port = {port}\nsmtp-security = \"starttls\""
    );
    // Without the CA the certificate is refused, and said so; nothing is sent in clear.
    let cfg = site(&env, &base);
    let out = env
        .cmd()
        .args(["--config", &cfg, "alert", "test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("FAILED"), "{text}");
    assert!(mails_to(&PathBuf::from(&maildir), &to).is_empty());
    let cfg = site(&env, &format!("{base}\nsmtp-ca = \"{ca}\""));
    let r = env.json(&["--config", &cfg, "alert", "test"], 0);
    assert_eq!(r[0]["channel"], "email", "{r}");
    let mails = mails_to(&PathBuf::from(&maildir), &to);
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(
        mails[0].contains("Subject: lomob: test alert"),
        "{}",
        mails[0]
    );
}

#[test]
fn heartbeats_and_webhooks_say_start_success_and_failure_and_never_show_their_urls() {
    let env = Env::new();
    let hooks = HookServer::start();
    let secret = "tok3n-s3cret";
    let cfg = site(
        &env,
        "webhook = { env = \"T_HOOK\" }\nheartbeat = { env = \"T_BEAT\" }",
    );
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .env("T_HOOK", hooks.url(&format!("/hook/{secret}")))
            .env("T_BEAT", hooks.url(&format!("/beat/{secret}")))
            .args(["--config", &cfg])
            .args(args)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(secret), "a secret URL leaked: {all}");
        out.status.code()
    };
    assert_eq!(run(&["backup"]), Some(0));
    let beat = format!("POST /beat/{secret}");
    assert_eq!(hooks.bodies(&format!("{beat}/start")).len(), 1);
    assert_eq!(hooks.bodies(&beat).len(), 1);
    assert!(hooks.bodies(&beat)[0].contains("\"site\": \"b\""));
    // A failing sync: the stage folder is not writable.
    let stage = env.path().join("stage/stage");
    std::fs::remove_dir_all(&stage).unwrap();
    std::fs::write(&stage, b"a file where the folder was").unwrap();
    put(&env, b"c.jpg", &bytes(3, 20_000), 1_600_000_200 * NS);
    assert_ne!(run(&["backup"]), Some(0));
    assert_eq!(hooks.bodies(&format!("{beat}/fail")).len(), 1);
    let hook = hooks.bodies(&format!("POST /hook/{secret}"));
    assert_eq!(hook.len(), 1, "{hook:?}");
    let v: serde_json::Value = serde_json::from_str(&hook[0]).unwrap();
    assert_eq!(v["subject"], "lomob: the sync of site b failed", "{v}");
    assert_eq!(v["resolved"], false, "{v}");
    // `alert test` goes through every channel.
    assert_eq!(run(&["alert", "test"]), Some(0));
    assert_eq!(hooks.bodies(&format!("POST /hook/{secret}")).len(), 2);
}

#[test]
fn an_identical_alert_waits_for_repeat_after_and_a_cleared_one_is_resolved_once() {
    let env = Env::new();
    let hooks = HookServer::start();
    let cfg = site(
        &env,
        &format!(
            "webhook = \"{}\"\nrepeat-after-days = 7\nstale-after-days = 30",
            hooks.url("/hook")
        ),
    );
    env.json(&["--config", &cfg, "backup"], 0);
    damage_stage(&env);
    let now = jiff::Timestamp::now().as_second();
    let check = |days: i64, code: i32| {
        env.cmd()
            .env("LOMOB_TEST_NOW", (now + days * 86_400).to_string())
            .args(["--config", &cfg, "check", "--site", "b", "--stage"])
            .output()
            .map(|o| assert_eq!(o.status.code(), Some(code)))
            .unwrap();
        hooks.bodies("POST /hook")
    };
    assert_eq!(check(0, 6).len(), 1);
    assert_eq!(check(1, 6).len(), 1, "not again within repeat-after");
    assert_eq!(check(6, 6).len(), 1);
    let sent = check(8, 6);
    assert_eq!(sent.len(), 2, "again once repeat-after has passed");
    env.cmd()
        .args([
            "--config", &cfg, "check", "--site", "b", "--stage", "--repair",
        ])
        .output()
        .unwrap();
    let sent = check(9, 0);
    let last: serde_json::Value = serde_json::from_str(sent.last().unwrap()).unwrap();
    assert_eq!(last["resolved"], true, "{last}");
    assert!(
        last["subject"]
            .as_str()
            .unwrap()
            .starts_with("lomob: resolved:"),
        "{last}"
    );
    let n = sent.len();
    assert_eq!(check(10, 0).len(), n, "resolved is sent once");
}

#[test]
fn a_site_not_synced_for_longer_than_stale_after_is_alerted() {
    let env = Env::new();
    let hooks = HookServer::start();
    let cfg = site(
        &env,
        &format!("webhook = \"{}\"\nstale-after-days = 3", hooks.url("/hook")),
    );
    env.json(&["--config", &cfg, "backup"], 0);
    let now = jiff::Timestamp::now().as_second();
    let check = |days: i64| {
        env.cmd()
            .env("LOMOB_TEST_NOW", (now + days * 86_400).to_string())
            .args(["--config", &cfg, "check", "--site", "b", "--stage"])
            .output()
            .unwrap();
        hooks.bodies("POST /hook")
    };
    assert!(check(2).is_empty());
    let sent = check(4);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let v: serde_json::Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(
        v["subject"], "lomob: site b has not been backed up for 4 days",
        "{v}"
    );
}

#[test]
fn alert_test_without_any_channel_says_how_to_add_one() {
    let env = Env::new();
    let cfg = site(&env, "");
    let out = env
        .cmd()
        .args(["--config", &cfg, "alert", "test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[alert]"));
}

#[test]
fn a_run_refused_because_another_lomob_holds_the_manifest_is_alerted() {
    let env = Env::new();
    let hooks = HookServer::start();
    let cfg = site(
        &env,
        &format!(
            "webhook = \"{}\"\nheartbeat = \"{}\"",
            hooks.url("/hook"),
            hooks.url("/beat")
        ),
    );
    env.json(&["--config", &cfg, "backup"], 0);
    let _held = lomob::manifest::Manifest::open(&env.db()).unwrap();
    let out = env
        .cmd()
        .args(["--config", &cfg, "sync", "--site", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let hook = hooks.bodies("POST /hook");
    assert_eq!(hook.len(), 1, "{hook:?}");
    let v: serde_json::Value = serde_json::from_str(&hook[0]).unwrap();
    assert!(
        v["subject"]
            .as_str()
            .unwrap()
            .contains("in use by another lomob process"),
        "{v}"
    );
    assert_eq!(hooks.bodies("POST /beat/fail").len(), 1);
}

#[test]
fn mail_over_tls_from_the_first_byte() {
    let (Some(port), Some(maildir), Some(ca)) = (
        service_var("LOMOB_TEST_SMTPS_PORT"),
        service_var("LOMOB_TEST_SMTPS_MAILDIR"),
        service_var("LOMOB_TEST_SMTP_CA"),
    ) else {
        return;
    };
    let env = Env::new();
    let to = format!("smtps-{}@example.com", unique(&env));
    let cfg = site(
        &env,
        &format!(
            "email = [\"{to}\"]\nsmtp-host = \"127.0.0.1\"\nsmtp-port = {port}\nsmtp-security = \"tls\"\nsmtp-ca = \"{ca}\""
        ),
    );
    let r = env.json(&["--config", &cfg, "alert", "test"], 0);
    assert_eq!(r[0]["ok"], true, "{r}");
    let mails = mails_to(&PathBuf::from(&maildir), &to);
    assert_eq!(mails.len(), 1, "{mails:?}");
}

#[test]
fn mail_through_a_relay_that_requires_a_login_and_the_password_shows_nowhere() {
    let (Some(port), Some(maildir), Some(ca), Some(user), Some(pass), Some(logins)) = (
        service_var("LOMOB_TEST_SMTP_AUTH_PORT"),
        service_var("LOMOB_TEST_SMTP_AUTH_MAILDIR"),
        service_var("LOMOB_TEST_SMTP_CA"),
        service_var("LOMOB_TEST_SMTP_AUTH_USER"),
        service_var("LOMOB_TEST_SMTP_AUTH_PASSWORD"),
        service_var("LOMOB_TEST_SMTP_AUTH_LOGINS"),
    ) else {
        return;
    };
    let env = Env::new();
    let to = format!("auth-{}@example.com", unique(&env));
    let cfg = site(
        &env,
        &format!(
            "email = [\"{to}\"]\nsmtp-host = \"127.0.0.1\"\nsmtp-port = {port}\nsmtp-security = \"starttls\"\nsmtp-ca = \"{ca}\"\nsmtp-user = \"{user}\"\nsmtp-password = {{ env = \"TEST_SMTP_PASS\" }}"
        ),
    );
    let alert_test = |password: &str| {
        env.cmd()
            .env("TEST_SMTP_PASS", password)
            .args(["--config", &cfg, "--log-level", "trace", "alert", "test"])
            .output()
            .unwrap()
    };
    // The right password logs in (after STARTTLS) and the mail is delivered.
    let out = alert_test(&pass);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains(&pass), "the password appeared in the output");
    assert_eq!(mails_to(&PathBuf::from(&maildir), &to).len(), 1);
    let seen = std::fs::read_to_string(&logins).unwrap();
    assert!(seen.contains(&format!("{user} ok")), "{seen}");
    // A wrong one is refused by the relay, the channel says FAILED, and neither password
    // is shown.
    let wrong = "not-the-relay-password-77";
    let out = alert_test(wrong);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("FAILED") && all.contains("check smtp-user and smtp-password"),
        "{all}"
    );
    assert!(
        !all.contains(wrong) && !all.contains(&pass),
        "a password appeared: {all}"
    );
    assert!(std::fs::read_to_string(&logins)
        .unwrap()
        .contains(&format!("{user} refused")));
    assert_eq!(mails_to(&PathBuf::from(&maildir), &to).len(), 1);
    // No login at all: the relay wants one, and the message says what to set.
    let cfg = site(
        &env,
        &format!(
            "email = [\"{to}\"]\nsmtp-host = \"127.0.0.1\"\nsmtp-port = {port}\nsmtp-security = \"starttls\"\nsmtp-ca = \"{ca}\""
        ),
    );
    let out = env
        .cmd()
        .args(["--config", &cfg, "alert", "test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("set smtp-user and smtp-password"), "{text}");
}

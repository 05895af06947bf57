//! Google Drive and OneDrive stages end to end, through the real binary, against the
//! protocol fakes (`tests/servers/cloud_fakes.py`): OpenDAL's real requests, over TLS, to
//! the providers' own host names (a private hosts file per `lomob` process, see
//! `support::fakes`). Every test runs for both providers, with the archive on a local disk.
//!
//! What a fake cannot show: real quotas and their accounting, real throttling patterns, and
//! changes the providers make to their APIs.

use std::time::Instant;

use crate::support::fakes::{Account, Fakes};
use crate::support::{bytes, put, walk, Env, NS};

/// A site whose stage is `provider` (gdrive or onedrive) on a fresh fake account and whose
/// archive is a local folder.
struct Site {
    fakes: Fakes,
    acc: Account,
    cfg: String,
}

fn site(env: &Env, provider: &str, stage_extra: &str) -> Option<Site> {
    site_with(env, provider, stage_extra, "")
}

/// [`site`] with more profile text after the site's sections (`[sites.c.encryption]`).
fn site_with(env: &Env, provider: &str, stage_extra: &str, more: &str) -> Option<Site> {
    let fakes = Fakes::get()?;
    let acc = fakes.account(env, provider);
    let cfg = env.config(&format!(
        "[library]\nroots = [\"{root}/lib\"]\n\n[sites.c]\npack-threshold = \"1GB\"\nstage = {stage}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n\n[sites.c.transfer]\nretries = 4\n{more}",
        root = env.path().display(),
        stage = acc.stage(provider, stage_extra),
    ));
    Some(Site { fakes, acc, cfg })
}

impl Site {
    fn json(&self, env: &Env, args: &[&str], code: i32) -> serde_json::Value {
        let mut all = vec!["--config", &self.cfg];
        all.extend_from_slice(args);
        self.fakes.json(env, &all, code)
    }

    fn run(&self, env: &Env, args: &[&str]) -> std::process::Output {
        self.fakes
            .cmd(env)
            .args(["--config", &self.cfg])
            .args(args)
            .output()
            .unwrap()
    }

    /// Staged objects on the drive (not in the trash or recycle bin).
    fn staged(&self) -> Vec<serde_json::Value> {
        self.acc
            .files()
            .into_iter()
            .filter(|f| {
                f["path"].as_str().unwrap().starts_with("/lomob/stage/") && f["trashed"] == false
            })
            .collect()
    }

    /// Uploads of staged content: every upload but those of lomob's own `meta/` objects
    /// (the site mark, manifest snapshots), one each.
    fn content_uploads(&self) -> usize {
        let meta = self
            .acc
            .files()
            .iter()
            .filter(|f| f["path"].as_str().unwrap().starts_with("/lomob/meta/"))
            .count();
        self.acc.uploads() - meta
    }

    fn token_requests(&self) -> usize {
        self.acc
            .requests()
            .iter()
            .filter(|r| r.path.contains("token"))
            .count()
    }
}

/// Names a family library really has: bytes that are not UTF-8, CJK, emoji, a 200-byte
/// name, deep folders, an empty file.
fn awkward_library(env: &Env) -> Vec<(Vec<u8>, Vec<u8>)> {
    let long = format!("{}.jpg", "長".repeat(65)); // 195 + 4 bytes
    assert!(long.len() >= 199 && long.len() <= 255);
    let specs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (
            b"2024/\xff\xfe raw latin1 \xe9t\xe9.jpg".to_vec(),
            bytes(1, 70_000),
        ),
        (
            "2024/家族の写真/お正月.jpg".as_bytes().to_vec(),
            bytes(2, 120_000),
        ),
        (
            "2024/🎉 party 🥳/IMG_0001.HEIC".as_bytes().to_vec(),
            bytes(3, 33_333),
        ),
        (format!("2024/{long}").into_bytes(), bytes(4, 4_000)),
        (
            b"a/b/c/d/e/f/g/h/i/j/k/deep.mov".to_vec(),
            bytes(5, 250_000),
        ),
        (b"empty.txt".to_vec(), Vec::new()),
        (b"2023/same as family photo.jpg".to_vec(), bytes(2, 120_000)),
    ];
    for (i, (rel, data)) in specs.iter().enumerate() {
        put(env, rel, data, (1_700_000_000 + i as i64 * 3600) * NS);
    }
    specs
}

/// Every restored file under `to` is byte-identical to its original.
fn same_files(env: &Env, to: &std::path::Path, lib: &[(Vec<u8>, Vec<u8>)]) {
    use std::os::unix::ffi::OsStrExt;
    let restored = walk(to);
    assert_eq!(restored.len(), lib.len(), "{restored:?}");
    for (rel, data) in lib {
        let want = env.lib().join(std::ffi::OsStr::from_bytes(rel));
        let got = restored
            .iter()
            .find(|p| p.ends_with(std::path::Path::new(std::ffi::OsStr::from_bytes(rel))))
            .unwrap_or_else(|| panic!("{} not restored: {restored:?}", want.display()));
        assert_eq!(&std::fs::read(got).unwrap(), data, "{}", got.display());
    }
}

/// `site test`, a backup of the awkward library (a second sends nothing), `check --stage`
/// (nothing downloaded, nothing found), `restore` from the staged copies, a file over the
/// one-shot limit that skips the stage, and `sync --pack-now` freeing the staged copies.
fn round_trip(provider: &str) {
    let env = Env::new();
    // Above 4 MB OneDrive's writer uses an upload session: the 5 MB file takes it.
    let Some(s) = site(&env, provider, ", one-shot-limit = \"6MB\"") else {
        return;
    };
    // Lists come in pages of 3, so every listing follows the provider's paging.
    s.acc.page_size(3);
    let probe = s.json(&env, &["site", "test", "c"], 0);
    assert!(
        probe.as_array().unwrap().iter().all(|p| p["ok"] == true),
        "{provider}: {probe}"
    );

    let mut lib = awkward_library(&env);
    let video = bytes(6, 5 << 20);
    put(&env, b"2024/video.mp4", &video, 1_700_100_000 * NS);
    lib.push((b"2024/video.mp4".to_vec(), video));
    let r = s.json(&env, &["backup"], 0);
    assert_eq!(r[0]["ok"], true, "{provider}: {r}");
    // Seven distinct contents (two files share one; the empty file is one too).
    let staged = s.staged();
    assert_eq!(
        staged.len(),
        r[0]["staged_files"].as_u64().unwrap() as usize,
        "{r}"
    );
    assert!(staged.len() >= 6, "{provider}: {staged:?} {r}");

    let sent = s.content_uploads();
    let r = s.json(&env, &["backup"], 0);
    assert_eq!(r[0]["staged_files"], 0, "{provider}: {r}");
    assert_eq!(
        s.content_uploads(),
        sent,
        "{provider}: a second backup sends nothing"
    );

    let downloads = s.acc.downloads();
    let r = s.json(&env, &["check", "--site", "c", "--stage"], 0);
    let part = &r["sites"][0]["parts"][0];
    assert_eq!(
        part["findings"].as_array().unwrap().len(),
        0,
        "{provider}: {r}"
    );
    assert_eq!(
        s.acc.downloads(),
        downloads,
        "{provider}: check --stage downloads nothing"
    );

    let to = env.path().join("restored");
    let r = s.json(&env, &["restore", "--to", to.to_str().unwrap()], 0);
    assert_eq!(r["restored"], lib.len(), "{provider}: {r}");
    same_files(&env, &to, &lib);
    assert!(
        s.acc.downloads() > downloads,
        "{provider}: restored from the stage"
    );

    // Over the one-shot limit: never staged, it waits for the next image.
    let big = bytes(7, 7 << 20);
    put(&env, b"2024/long video.mp4", &big, 1_700_200_000 * NS);
    let sent = s.content_uploads();
    let r = s.json(&env, &["backup"], 0);
    assert_eq!(r[0]["ok"], true, "{provider}: {r}");
    assert_eq!(r[0]["staged_files"], 0, "{provider}: {r}");
    assert_eq!(
        s.content_uploads(),
        sent,
        "{provider}: the big file skips the stage"
    );

    let staged_before = s.staged().len();
    let r = s.json(&env, &["sync", "--all", "--pack-now"], 0);
    assert_eq!(r[0]["ok"], true, "{provider}: {r}");
    assert_eq!(r[0]["freed_files"], staged_before, "{provider}: {r}");
    assert!(s.staged().is_empty(), "{provider}: {:?}", s.staged());
    assert_eq!(
        s.content_uploads(),
        sent,
        "{provider}: packing reads the originals"
    );
}

#[test]
fn gdrive_round_trip() {
    round_trip("gdrive");
}

#[test]
fn onedrive_round_trip() {
    round_trip("onedrive");
}

/// An access token the provider stops accepting mid-run (401) is refreshed once, and the
/// run completes.
fn expired_token(provider: &str, upload: &str) {
    let env = Env::new();
    let Some(s) = site(&env, provider, "") else {
        return;
    };
    put(&env, b"a.jpg", &bytes(1, 50_000), 1_700_000_000 * NS);
    put(&env, b"b.jpg", &bytes(2, 50_000), 1_700_000_000 * NS);
    put(&env, b"c.jpg", &bytes(3, 50_000), 1_700_000_000 * NS);
    s.acc.fault(401, 1, None, upload);
    let r = s.json(&env, &["backup"], 0);
    assert_eq!(r[0]["ok"], true, "{provider}: {r}");
    assert_eq!(r[0]["staged_files"], 3, "{provider}: {r}");
    assert_eq!(s.staged().len(), 3, "{provider}");
    assert_eq!(
        s.token_requests(),
        2,
        "{provider}: the first token, then one refresh"
    );
}

#[test]
fn gdrive_expired_token_is_refreshed_once() {
    expired_token("gdrive", "POST www.googleapis.com /upload/");
}

#[test]
fn onedrive_expired_token_is_refreshed_once() {
    expired_token("onedrive", "PUT graph.microsoft.com");
}

/// A revoked refresh token stops the site with a message that says what to run.
fn revoked(provider: &str) {
    let env = Env::new();
    let Some(s) = site(&env, provider, "") else {
        return;
    };
    put(&env, b"a.jpg", &bytes(1, 50_000), 1_700_000_000 * NS);
    s.json(&env, &["backup"], 0);
    s.acc.revoke();
    put(&env, b"b.jpg", &bytes(2, 50_000), 1_700_000_000 * NS);
    let out = s.run(&env, &["backup"]);
    assert!(!out.status.success(), "{provider}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("lomob site auth"), "{provider}: {text}");
    assert!(text.contains("invalid_grant"), "{provider}: {text}");
    // Nothing lost: the first file is still staged, the second waits.
    assert_eq!(s.staged().len(), 1, "{provider}");
}

#[test]
fn gdrive_revoked_refresh_token_names_site_auth() {
    revoked("gdrive");
}

#[test]
fn onedrive_revoked_refresh_token_names_site_auth() {
    revoked("onedrive");
}

/// 429 and 503 are retried after the time `Retry-After` asks for.
fn throttled(provider: &str, host: &str) {
    let env = Env::new();
    let Some(s) = site(&env, provider, "") else {
        return;
    };
    put(&env, b"a.jpg", &bytes(1, 50_000), 1_700_000_000 * NS);
    s.acc.fault(429, 2, Some(2), host);
    s.acc.fault(503, 1, Some(1), host);
    let before = s.acc.requests().len();
    let t = Instant::now();
    let r = s.json(&env, &["backup"], 0);
    let took = t.elapsed();
    assert_eq!(r[0]["ok"], true, "{provider}: {r}");
    assert_eq!(s.staged().len(), 1, "{provider}");
    assert!(
        took >= std::time::Duration::from_secs(5),
        "{provider}: Retry-After 2 + 2 + 1 s honoured, took {took:?}"
    );
    assert!(s.acc.requests().len() - before >= 4, "{provider}");
}

#[test]
fn gdrive_throttling_is_retried_after_retry_after() {
    throttled("gdrive", "www.googleapis.com");
}

#[test]
fn onedrive_throttling_is_retried_after_retry_after() {
    throttled("onedrive", "graph.microsoft.com");
}

/// A full drive is reported as such, loses nothing, and a later run completes.
fn full_drive(provider: &str) {
    let env = Env::new();
    let Some(s) = site(&env, provider, "") else {
        return;
    };
    for i in 0..3u32 {
        put(
            &env,
            format!("{i}.jpg").as_bytes(),
            &bytes(i, 60_000),
            1_700_000_000 * NS,
        );
    }
    s.acc.quota(Some(100_000));
    let out = s.run(&env, &["backup", "--json"]);
    assert!(!out.status.success(), "{provider}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("full"), "{provider}: {text}");
    let staged = s.staged().len();
    assert!(staged < 3, "{provider}");
    // More room (the trash emptied, space bought): the next run stages the rest.
    s.acc.quota(None);
    let r = s.json(&env, &["backup"], 0);
    assert_eq!(r[0]["ok"], true, "{provider}: {r}");
    assert_eq!(s.staged().len(), 3, "{provider}");
    let to = env.path().join("restored");
    let r = s.json(&env, &["restore", "--to", to.to_str().unwrap()], 0);
    assert_eq!(r["restored"], 3, "{provider}: {r}");
}

#[test]
fn gdrive_full_drive_is_reported_and_loses_nothing() {
    full_drive("gdrive");
}

#[test]
fn onedrive_full_drive_is_reported_and_loses_nothing() {
    full_drive("onedrive");
}

/// `lomob site auth` against the fakes' OAuth endpoints: the test plays the browser (it
/// takes the printed address, has the provider issue a code for its PKCE challenge, and
/// comes back to lomob's loopback listener); lomob trades the code at the provider's real
/// token address (the fake), saves the refresh token, and `site test` passes with it.
fn site_auth(provider: &str) {
    use std::io::{BufRead, BufReader, Read, Write};
    let env = Env::new();
    let Some(fakes) = Fakes::get() else {
        return;
    };
    let acc = fakes.account(&env, provider);
    let token_file = env.path().join("secrets/token");
    let root = env.path().display();
    let cfg = env.config(&format!(
        "[library]\nroots = [\"{root}/lib\"]\n[sites.c]\npack-threshold = \"1GB\"\nstage = {{ kind = \"{provider}\", client-id = \"{}\", client-secret = \"s\", refresh-token = {{ file = \"{}\" }} }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n",
        acc.id,
        token_file.display()
    ));
    let mut child = fakes
        .std_cmd(&env)
        .args([
            "--config",
            &cfg,
            "site",
            "auth",
            "c",
            "--timeout-secs",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut stderr = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        stderr.push_str(&line);
        let text = line.trim().to_string();
        line.clear();
        if !text.starts_with("https://") {
            continue;
        }
        let url = reqwest::Url::parse(&text).unwrap();
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        acc.authcode("the-code", &q["code_challenge"], "rt-from-consent");
        let back = reqwest::Url::parse(&q["redirect_uri"]).unwrap();
        let mut s = std::net::TcpStream::connect(format!(
            "{}:{}",
            back.host_str().unwrap(),
            back.port().unwrap()
        ))
        .unwrap();
        write!(
            s,
            "GET /?code=the-code&state={} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
            q["state"]
        )
        .unwrap();
        let mut page = String::new();
        let _ = s.read_to_string(&mut page);
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{provider}: {stderr}\n{out}");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        "rt-from-consent"
    );
    assert!(!stderr.contains("rt-from-consent") && !out.contains("rt-from-consent"));
    // The site test ran with the new token: it reached the drive.
    assert!(
        acc.requests().iter().any(|r| !r.path.contains("token")),
        "{provider}"
    );
}

#[test]
fn gdrive_site_auth_against_the_fake_provider() {
    site_auth("gdrive");
}

#[test]
fn onedrive_site_auth_against_the_fake_provider() {
    site_auth("onedrive");
}

/// The findings of the stage part of a `check --stage` answer.
fn stage_findings(r: &serde_json::Value) -> Vec<serde_json::Value> {
    let parts = r["sites"][0]["parts"].as_array().unwrap();
    let p = parts.iter().find(|p| p["part"] == "stage").unwrap();
    p["findings"].as_array().unwrap().clone()
}

/// A staged copy whose bytes changed on the provider, keeping its size, time and eTag, is
/// found by the provider's own checksum (Drive's SHA-256, OneDrive's QuickXorHash) without
/// a byte downloaded; `--repair` stages it again from the original. On an encrypted site
/// the provider's checksum is of the ciphertext: it is compared with the one recorded at
/// staging, never with the content's.
fn altered_copy(provider: &str, encrypted: bool) {
    let env = Env::new();
    let more = if encrypted {
        let file = env.path().join("site.key");
        let r = env.json(&["key", "generate", "-o", file.to_str().unwrap()], 0);
        format!(
            "\n[sites.c.encryption]\nrecipients = [\"{}\"]\nidentity = {{ file = \"{}\" }}\n",
            r["recipient"].as_str().unwrap(),
            file.display()
        )
    } else {
        String::new()
    };
    let Some(s) = site_with(&env, provider, "", &more) else {
        return;
    };
    // Sizes that are not multiples of 160: QuickXorHash is linear, and the fake's
    // alteration (every byte XORed with 0x5A) of a file of 160·k bytes, k odd, leaves it
    // unchanged (each bit of the register gets the parity of 0x5A, which is even). A flip
    // of one byte, as real damage is, always changes it.
    put(&env, b"a.jpg", &bytes(1, 50_001), 1_700_000_000 * NS);
    put(&env, b"b.jpg", &bytes(2, 60_001), 1_700_000_000 * NS);
    let r = s.json(&env, &["backup"], 0);
    assert_eq!(r[0]["staged_files"], 2, "{provider}: {r}");
    let r = s.json(&env, &["check", "--site", "c", "--stage"], 0);
    assert!(stage_findings(&r).is_empty(), "{provider}: {r}");

    let victim = s.staged()[0]["path"].as_str().unwrap().to_string();
    s.acc.alter(&victim);
    let listings = || {
        s.acc
            .requests()
            .iter()
            .filter(|r| r.path.contains("stage:/children"))
            .count()
    };
    let listed = listings();
    if provider == "onedrive" {
        // lomob's own listing call is retried like OpenDAL's requests.
        s.acc.fault(500, 1, None, "stage:/children");
    }
    let downloads = s.acc.downloads();
    let r = s.json(&env, &["check", "--site", "c", "--stage"], 6);
    if provider == "onedrive" {
        assert_eq!(listings(), listed + 2, "{provider}: one 500, one retry");
    }
    let found = stage_findings(&r);
    assert_eq!(found.len(), 1, "{provider}: {r}");
    assert_eq!(found[0]["problem"], "wrong-checksum", "{provider}: {r}");
    assert_eq!(
        format!("/lomob/{}", found[0]["what"].as_str().unwrap()),
        victim,
        "{provider}: {r}"
    );
    assert_eq!(
        s.acc.downloads(),
        downloads,
        "{provider}: the check downloads nothing"
    );

    s.run(&env, &["check", "--site", "c", "--stage", "--repair"]);
    let r = s.json(&env, &["check", "--site", "c", "--stage"], 0);
    assert!(stage_findings(&r).is_empty(), "{provider}: {r}");
}

#[test]
fn gdrive_altered_copy_is_found_by_drives_sha256() {
    altered_copy("gdrive", false);
}

#[test]
fn onedrive_altered_copy_is_found_by_its_quickxorhash() {
    altered_copy("onedrive", false);
}

#[test]
fn gdrive_encrypted_altered_copy_is_found_by_the_recorded_sha256() {
    altered_copy("gdrive", true);
}

#[test]
fn onedrive_encrypted_altered_copy_is_found_by_the_recorded_quickxorhash() {
    altered_copy("onedrive", true);
}

/// An upload the provider stored with other bytes than were sent (its checksum of what it
/// stored differs) is not recorded as staged, and its copy is not left under lomob's name;
/// the next run stages the file again.
fn corrupted_upload(provider: &str) {
    let env = Env::new();
    let Some(s) = site(&env, provider, "") else {
        return;
    };
    put(&env, b"a.jpg", &bytes(1, 50_000), 1_700_000_000 * NS);
    s.acc.corrupt_uploads(1, "/lomob/stage/");
    let out = s.run(&env, &["backup", "--json"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(6), "{provider}: {text}");
    assert!(s.staged().is_empty(), "{provider}: {:?}", s.staged());

    let r = s.json(&env, &["backup"], 0);
    assert_eq!(r[0]["staged_files"], 1, "{provider}: {r}");
    let r = s.json(&env, &["check", "--site", "c", "--stage"], 0);
    assert!(stage_findings(&r).is_empty(), "{provider}: {r}");
}

#[test]
fn gdrive_upload_stored_with_other_bytes_is_not_staged() {
    corrupted_upload("gdrive");
}

#[test]
fn onedrive_upload_stored_with_other_bytes_is_not_staged() {
    corrupted_upload("onedrive");
}

/// Drive and OneDrive as an archive: OpenDAL's writers for them are one-shot, so an image
/// over one 8 MiB write failed. An image now goes in one write of the whole image, which
/// the profile bounds: iso-size above the archive's one-shot-limit is refused at load.
fn drive_archive(provider: &str) {
    let env = Env::new();
    let Some(fakes) = Fakes::get() else {
        return;
    };
    let acc = fakes.account(&env, provider);
    let root = env.path().display().to_string();
    let text = |iso: &str| {
        format!(
            "[library]\nroots = [\"{root}/lib\"]\n[sites.c]\niso-size = \"{iso}\"\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {}\n",
            acc.stage(provider, ", one-shot-limit = \"40MB\"")
        )
    };
    let too_big = env.config_named("big.toml", &text("50MB"));
    let out = fakes
        .cmd(&env)
        .args(["--config", &too_big, "sync", "--all"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{provider}");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("one-shot-limit") && e.contains("iso-size"),
        "{e}"
    );

    let cfg = env.config_named("ok.toml", &text("40MB"));
    let a = bytes(21, 9 << 20);
    let b = bytes(22, 5 << 20);
    put(&env, b"2024/a.mp4", &a, 1_700_000_000 * NS);
    put(&env, b"2024/b.jpg", &b, 1_700_000_100 * NS);
    let r = fakes.json(&env, &["--config", &cfg, "backup", "--pack-now"], 0);
    assert_eq!(r[0]["archived_files"], 2, "{provider}: {r}");
    let images: Vec<_> = acc
        .files()
        .into_iter()
        .filter(|f| f["path"].as_str().unwrap().ends_with(".iso"))
        .collect();
    assert_eq!(images.len(), 1, "{provider}: {images:?}");
    let to = env.path().join("restored");
    std::fs::remove_dir_all(env.path().join("stage")).ok();
    let r = fakes.json(
        &env,
        &["--config", &cfg, "restore", "--to", to.to_str().unwrap()],
        0,
    );
    assert_eq!(r["restored"], 2, "{provider}: {r}");
    let got = walk(&to);
    assert_eq!(got.len(), 2, "{provider}: {got:?}");
}

#[test]
fn gdrive_archive_takes_an_image_larger_than_one_write() {
    drive_archive("gdrive");
}

#[test]
fn onedrive_archive_takes_an_image_larger_than_one_write() {
    drive_archive("onedrive");
}

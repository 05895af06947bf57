//! The bandwidth limit, measured: the achieved rate of stage and archive uploads, one PUT
//! and parts (safety issue, item 10).

use std::time::Instant;

use crate::support::{files_under, service_var, set_mtime, unique, Bucket, Env};

fn library(env: &Env, n: usize, size: usize) {
    for i in 0..n {
        let data: Vec<u8> = (0..size)
            .map(|x| ((x as u64 * 2654435761 + i as u64 * 97) >> 7) as u8)
            .collect();
        let p = env.write(&format!("{:02}/IMG_{i:05}.jpg", i % 3), &data);
        set_mtime(&p, 1_600_000_000 + i as i64 * 3_600);
    }
}

fn config(env: &Env, name: &str, text: &str) -> String {
    let p = env.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Runs `lomob ARGS --json`, returning the report and how long the command took.
fn timed(env: &Env, args: &[&str]) -> (serde_json::Value, f64) {
    let start = Instant::now();
    let r = env.json(args, 0);
    (r, start.elapsed().as_secs_f64())
}

fn assert_rate(what: &str, bytes: u64, secs: f64, limit: f64) {
    let rate = bytes as f64 / secs;
    assert!(
        (limit * 0.85..=limit * 1.15).contains(&rate),
        "{what}: {bytes} bytes in {secs:.2} s is {:.2} MB/s, the limit is {:.2} MB/s",
        rate / 1e6,
        limit / 1e6
    );
}

/// Item 10: `bandwidth-limit` failed every object larger than the limit ("burst size is
/// smaller than the request size"). Now any object goes, at the limited rate, for stage and
/// archive, one PUT and parts.
#[test]
fn item10_a_bandwidth_limit_works_for_any_object_size() {
    let _serial = crate::support::serial();
    let env = Env::new();
    // Four files of 2.5 MB: each larger than the 2 MB/s limit, 10 MB in all.
    library(&env, 4, 2_500_000);
    let root = env.path().display().to_string();
    let limit = 2_000_000.0;
    let mut text = format!(
        "[library]\nroots = [\"{root}/lib\"]\n[sites.nas]\nstage = {{ kind = \"fs\", root = \"{root}/stage\" }}\narchive = {{ kind = \"fs\", root = \"{root}/archive\" }}\n[sites.nas.transfer]\nbandwidth-limit = \"2MB\"\n"
    );
    let moto = service_var("LOMOB_TEST_MOTO_ENDPOINT");
    if let Some(ep) = &moto {
        for (site, extra) in [
            ("one", ""),
            ("parts", ", single-put-max = \"0\", part-size = \"5MiB\""),
        ] {
            let bucket = format!("bw-{site}-{}", unique(&env));
            Bucket::new(ep, &bucket);
            text.push_str(&format!(
                "[sites.{site}]\nstage = {{ kind = \"fs\", root = \"{root}/{site}-stage\" }}\narchive = {{ kind = \"glacier\", bucket = \"{bucket}\", endpoint = \"{ep}\", access-key-id = \"k\", secret-access-key = \"s\"{extra} }}\n[sites.{site}.transfer]\nbandwidth-limit = \"2MB\"\n"
            ));
        }
    }
    let c = config(&env, "c.toml", &text);
    env.json(&["--config", &c, "scan"], 0);
    // The stage, file by file.
    let (r, secs) = timed(&env, &["--config", &c, "sync", "--site", "nas"]);
    assert_eq!(r[0]["staged_files"], 4, "{r}");
    assert_rate(
        "fs stage",
        r[0]["staged_bytes"].as_u64().unwrap(),
        secs,
        limit,
    );
    // The archive, one image.
    let (r, secs) = timed(
        &env,
        &["--config", &c, "sync", "--site", "nas", "--pack-now"],
    );
    assert_eq!(r[0]["archived_files"], 4, "{r}");
    let image = files_under(&env.path().join("archive"))
        .into_iter()
        .find(|f| f.ends_with(".iso"))
        .unwrap();
    let size = std::fs::metadata(env.path().join("archive").join(image))
        .unwrap()
        .len();
    assert_rate("fs archive", size, secs, limit);
    if moto.is_none() {
        return;
    }
    // S3: one streamed PUT, and parts.
    for site in ["one", "parts"] {
        let (r, secs) = timed(
            &env,
            &["--config", &c, "sync", "--site", site, "--pack-now"],
        );
        assert_eq!(r[0]["archived_files"], 4, "{r}");
        let list = env.json(&["--config", &c, "iso", "list"], 0);
        let size = list
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"].as_str().unwrap().starts_with(site))
            .unwrap()["size"]
            .as_u64()
            .unwrap();
        assert_rate(site, size, secs, limit);
    }
}

//! A site on moto for end-to-end tests: its stage straight on moto, its archive (Deep
//! Archive semantics) behind a [`HttpProxy`] that logs and counts every request.

use std::sync::Arc;

use super::http_proxy::{Action, HttpProxy, Rule};
use super::{make_bucket, service_var, unique, Env};

/// A site with its stage on moto and its archive (Deep Archive) on moto behind a proxy.
pub struct Cloud {
    pub cfg: String,
    pub proxy: HttpProxy,
    pub stage_bucket: String,
    pub archive_bucket: String,
    pub endpoint: String,
}

pub fn cloud(env: &Env, rule: Arc<Rule>, stage_suffix: &str) -> Option<Cloud> {
    let endpoint = service_var("LOMOB_TEST_MOTO_ENDPOINT")?;
    let tag = unique(env);
    let stage_b = format!("stage{stage_suffix}-{tag}");
    let archive_b = format!("archive-{tag}");
    make_bucket(&endpoint, "k", "s", &stage_b);
    if stage_suffix.is_empty() {
        make_bucket(&endpoint, "k", "s", &archive_b);
    }
    let proxy = HttpProxy::start(&endpoint, rule);
    let root = env.path().display().to_string();
    let cfg = env.path().join(format!("cloud{stage_suffix}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
[library]
roots = ["{root}/lib"]

[sites.cloud]
iso-size = "1GB"
stage = {{ kind = "s3", bucket = "{stage_b}", endpoint = "{endpoint}", access-key-id = "k", secret-access-key = "s" }}
archive = {{ kind = "glacier", bucket = "{archive_b}", endpoint = "{}", access-key-id = "k", secret-access-key = "s" }}
"#,
            proxy.endpoint()
        ),
    )
    .unwrap();
    Some(Cloud {
        cfg: cfg.to_str().unwrap().to_string(),
        proxy,
        stage_bucket: stage_b,
        archive_bucket: archive_b,
        endpoint,
    })
}

pub fn forward() -> Arc<Rule> {
    Arc::new(|_| Action::Forward)
}

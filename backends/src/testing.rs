//! Helpers for the tests of this crate and of the engine (feature `testing`): the variables
//! `scripts/services.sh` sets for its test servers.

/// Reads a variable `scripts/services.sh` sets. Missing: the test is skipped loudly, or
/// fails when `LOMOB_REQUIRE_SERVICES=1` (as `scripts/test.sh` sets), so a missing server is
/// never a quiet pass.
pub fn service_var(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("LOMOB_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{var} is not set: run scripts/services.sh start (scripts/test.sh does)");
            }
            eprintln!(
                "SKIPPED: {var} is not set; run `scripts/services.sh start` and \
                 `eval \"$(scripts/services.sh env)\"` to run this test"
            );
            None
        }
    }
}

#!/usr/bin/env bash
# Fuzzes the ISO reader for a fixed time: scripts/fuzz-iso.sh [SECONDS] (default 120).
#
# With a nightly toolchain and cargo-fuzz installed, runs the libFuzzer target
# fuzz/fuzz_targets/reader.rs. Otherwise (the usual case on the lomob machines: stable Rust
# only) it says so and runs the stable substitute instead: the proptests that feed mutated
# and random images to the reader and assert it never panics, in a loop, with many cases
# (ISO_FUZZ_CASES) and a fresh random seed each round, until the time is up.
set -euo pipefail
SECS="${1:-120}"
cd "$(dirname "$0")/.."

if cargo +nightly --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-iso: running cargo-fuzz target 'reader' for ${SECS}s"
    exec cargo +nightly fuzz run reader -- -max_total_time="$SECS" -rss_limit_mb=2048
fi

echo "fuzz-iso: *** cargo-fuzz needs a nightly toolchain ('cargo +nightly') and cargo-fuzz;" >&2
echo "fuzz-iso: *** they are not available here, so fuzz/fuzz_targets/reader.rs is NOT run." >&2
echo "fuzz-iso: *** Running the stable proptest substitute for ${SECS}s instead." >&2
cargo test --lib --no-run -q
end=$((SECONDS + SECS))
rounds=0
while [ "$SECONDS" -lt "$end" ]; do
    ISO_FUZZ_CASES="${ISO_FUZZ_CASES:-2000}" cargo test -q --lib -- never_panic >/dev/null
    rounds=$((rounds + 1))
done
echo "fuzz-iso: ${rounds} round(s) of the never_panic proptests passed"

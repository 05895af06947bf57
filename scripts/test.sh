#!/usr/bin/env bash
# The one test command (README "Set-up"): installs what the tests need on a fresh Debian
# machine, starts the local test servers (loopback only, stopped again by PID), then runs
# formatting, lint and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# Independent ISO readers checked against every image we write, and setpriv (util-linux)
# for the unreadable-file tests, and the stock `age` tool that must decrypt every object of an
# encrypted site, strace to see that local-disk writes are fsynced (file, then folder), and
# libfaketime for the chaos suite's jumping clock; mingw-w64 and wine64 for the Windows build
# and its smoke test.
apt_needed=()
for pair in xorriso:xorriso bsdtar:libarchive-tools 7z:p7zip-full genisoimage:genisoimage setpriv:util-linux age:age strace:strace faketime:faketime x86_64-w64-mingw32-gcc:gcc-mingw-w64-x86-64 /usr/lib/wine/wine64:wine64; do
    bin=${pair%%:*}
    pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || apt_needed+=("$pkg")
done
if [ ${#apt_needed[@]} -gt 0 ]; then
    echo "test.sh: installing ${apt_needed[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${apt_needed[@]}" >/dev/null
fi

if [ -x scripts/services.sh ]; then
    scripts/services.sh start
    trap 'scripts/services.sh stop' EXIT
    # shellcheck disable=SC1091
    source .test-services/env
    # Server tests must not skip quietly here: a missing server is a failure.
    export LOMOB_REQUIRE_SERVICES=1
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Windows: the code lints for it too, and its release binary passes a smoke test under wine.
rustup target list --installed | grep -qx x86_64-pc-windows-gnu || rustup target add x86_64-pc-windows-gnu
cargo clippy --workspace --target x86_64-pc-windows-gnu -- -D warnings
scripts/windows-smoke.sh
cargo test --workspace

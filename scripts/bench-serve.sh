#!/usr/bin/env bash
# Upload throughput to a `lomob serve` receiver against `rclone serve s3` (issue #20: at
# least 0.8x rclone, measured the same way, the receiver's hashing included). The same
# client, lomob's resumable multipart driver (example `s3_upload`, release), uploads the
# same file of random bytes with the same part size to each server on loopback, both over
# HTTPS with a self-signed certificate the client pins (ECDSA P-256 for both: what
# `lomob serve` makes). Runs alternate (lomob, rclone, lomob, ...); the table shows the
# median of RUNS each. The receiver's CPU (user + system seconds, all threads, from
# /proc/PID/stat around each run) is reported per GB. "Complete s" is the time from the
# client's last part to the end of CompleteMultipartUpload.
#
#   scripts/bench-serve.sh                       # 2048 MiB file, 64 MiB parts, 4 in flight, 3 runs
#   BENCH_SIZE_MIB=512 RUNS=1 scripts/bench-serve.sh
#
# Needs .venv/bin/rclone (`scripts/services.sh start` installs it), openssl, python3 >= 3.11.
# Builds `lomob` and the example in release once (SKIP_BUILD=1 to use what is there). Both
# servers run on free 127.0.0.1 ports with HOME/XDG_* and their roots in a temp folder,
# and are stopped by PID at the end; the temp folder is removed. Prints a Markdown section;
# it does not edit BENCHMARKS.md.
set -euo pipefail

NAME=bench-serve
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib.sh"

SIZE_MIB=${BENCH_SIZE_MIB:-2048}
PART_MIB=${BENCH_PART_MIB:-64}
CONC=${BENCH_CONCURRENCY:-4}
RUNS=${RUNS:-3}
RCLONE=${RCLONE:-$ROOT/.venv/bin/rclone}
LOMOB="$ROOT/target/release/lomob"
UPLOAD="$ROOT/target/release/examples/s3_upload"

[[ -x $RCLONE ]] || die "no rclone at $RCLONE: run scripts/services.sh start first (it installs .venv)"
for t in openssl python3 curl; do command -v "$t" >/dev/null || die "$t is needed"; done

WORK=$(mktemp -d /tmp/lomob-bench-serve.XXXXXX)
LOMOB_PID=
RCLONE_PID=
stop() { # stops one PID we started, waiting for it
    local pid=$1
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop "$LOMOB_PID"
    stop "$RCLONE_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT

# Room for the file and every run's copy on each server (the objects are kept until the end).
NEED_MB=$((SIZE_MIB * (1 + 2 * RUNS) * 105 / 100))
AVAIL_MB=$(df -Pm "$WORK" | awk 'NR == 2 {print $4}')
((AVAIL_MB > NEED_MB + 2048)) || die "need about ${NEED_MB} MB free under /tmp, have ${AVAIL_MB} MB"

if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building lomob and the s3_upload example (release)"
    (cd "$ROOT" && cargo build --release -q --bin lomob &&
        cargo build --release -q -p lomob-backends --example s3_upload --features testing)
fi
[[ -x $LOMOB && -x $UPLOAD ]] || die "missing $LOMOB or $UPLOAD"

# Nothing of the user's is read or written: lomob and rclone get a private HOME.
mkdir -p "$WORK"/{home,config,data,cache,state,empty}
export HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/config" XDG_DATA_HOME="$WORK/data" \
    XDG_CACHE_HOME="$WORK/cache" XDG_STATE_HOME="$WORK/state"

log "writing a ${SIZE_MIB} MiB test file"
FILE="$WORK/image.bin"
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$FILE"
BYTES=$(stat -c %s "$FILE")

# ---- lomob serve: start, pair a sender, redeem the code into a profile ----
LPORT=$(free_port)
"$LOMOB" --no-progress serve --root "$WORK/lomob-root" --listen "127.0.0.1:$LPORT" \
    >"$WORK/lomob.log" 2>&1 </dev/null &
LOMOB_PID=$!
for _ in $(seq 300); do
    grep -q 'listening on https://' "$WORK/lomob.log" && break
    kill -0 "$LOMOB_PID" 2>/dev/null || { cat "$WORK/lomob.log" >&2; die "lomob serve exited"; }
    sleep 0.1
done
grep -q 'listening on https://' "$WORK/lomob.log" || die "lomob serve did not start"
PAIR=$("$LOMOB" --json serve --root "$WORK/lomob-root" pair --name bench)
CODE=$(jq -r .code <<<"$PAIR")
PROFILE="$WORK/profile.toml"
printf '[library]\nroots = ["%s"]\n' "$WORK/empty" >"$PROFILE"
"$LOMOB" --config "$PROFILE" site pair bench "$CODE" --no-encryption --no-test \
    --profile "$PROFILE" >"$WORK/pair.log" 2>&1 || { cat "$WORK/pair.log" >&2; die "site pair failed"; }
# endpoint, bucket, key id, secret, fingerprint of [sites.bench.stage], one per line.
mapfile -t L < <(python3 - "$PROFILE" <<'EOF'
import sys, tomllib, pathlib
p = pathlib.Path(sys.argv[1])
s = tomllib.loads(p.read_text())["sites"]["bench"]["stage"]
secret = s["secret-access-key"]
if isinstance(secret, dict):
    f = pathlib.Path(secret["file"])
    secret = (f if f.is_absolute() else p.parent / f).read_text().strip()
for k in (s["endpoint"], s["bucket"], s["access-key-id"], secret, s["tls-fingerprint"]):
    print(k)
EOF
)
L_EP=${L[0]} L_BUCKET=${L[1]} L_KEY=${L[2]} L_SECRET=${L[3]} L_FP=${L[4]}

# ---- rclone serve s3 over TLS, with a self-signed P-256 certificate ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$WORK/rclone.key" -out "$WORK/rclone.pem" 2>/dev/null
R_FP="sha256:$(openssl x509 -in "$WORK/rclone.pem" -outform DER | sha256sum | cut -d' ' -f1)"
R_KEY=benchkey R_SECRET=benchsecret R_BUCKET=bench
mkdir -p "$WORK/rclone-root/$R_BUCKET" # a top-level folder is a bucket
RPORT=$(free_port)
"$RCLONE" serve s3 --config /dev/null --addr "127.0.0.1:$RPORT" \
    --cert "$WORK/rclone.pem" --key "$WORK/rclone.key" \
    --auth-key "$R_KEY,$R_SECRET" "$WORK/rclone-root" >"$WORK/rclone.log" 2>&1 </dev/null &
RCLONE_PID=$!
R_EP="https://127.0.0.1:$RPORT"
for _ in $(seq 300); do
    curl -sk -o /dev/null --max-time 1 "$R_EP/" && break
    kill -0 "$RCLONE_PID" 2>/dev/null || { cat "$WORK/rclone.log" >&2; die "rclone serve exited"; }
    sleep 0.1
done

TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, all threads

# one_run SERVER N: one upload; appends "seconds MB/s server_cpu_s client_cpu_s complete_s"
# to $WORK/SERVER.results.
one_run() {
    local server=$1 n=$2 ep bucket key secret fp pid
    if [[ $server == lomob ]]; then
        ep=$L_EP bucket=$L_BUCKET key=$L_KEY secret=$L_SECRET fp=$L_FP pid=$LOMOB_PID
    else
        ep=$R_EP bucket=$R_BUCKET key=$R_KEY secret=$R_SECRET fp=$R_FP pid=$RCLONE_PID
    fi
    local c0 c1 t0 t1
    sync
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret \
        /usr/bin/time -f 'cpu %U %S' -o "$WORK/$server-$n.time" \
        "$UPLOAD" --endpoint "$ep" --bucket "$bucket" --key "bench/run-$n.bin" --file "$FILE" \
        --journal "$WORK/$server-$n.journal.json" --part-size "$((PART_MIB << 20))" \
        --concurrency "$CONC" --tls-fingerprint "$fp" |
        while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done \
            >"$WORK/$server-$n.out" || true # checked below, with the logs
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$pid")
    grep -q ' done etag=' "$WORK/$server-$n.out" ||
        { cat "$WORK/$server-$n.out" "$WORK/$server.log" >&2; die "$server run $n failed"; }
    local last_part done_at client
    last_part=$(awk '$2 == "part" {t = $1} END {print t}' "$WORK/$server-$n.out")
    done_at=$(awk '$2 == "done" {print $1}' "$WORK/$server-$n.out")
    client=$(awk '/^cpu/ {print $2 + $3}' "$WORK/$server-$n.time")
    awk -v b="$BYTES" -v t0="$t0" -v t1="$t1" -v c="$((c1 - c0))" -v hz="$TICK" \
        -v cl="$client" -v lp="$last_part" -v d="$done_at" \
        'BEGIN {printf "%.3f %.1f %.2f %.2f %.3f\n", t1 - t0, b / 1e6 / (t1 - t0), c / hz, cl, d - lp}' \
        >>"$WORK/$server.results"
    log "$server run $n: $(tail -n 1 "$WORK/$server.results") (s MB/s server-cpu client-cpu complete)"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for n in $(seq "$RUNS"); do
    one_run lomob "$n"
    one_run rclone "$n"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

col() { awk -v c="$2" '{print $c}' "$WORK/$1.results" | median_of; }
all() { awk -v c="$2" '{printf "%s%s", sep, $c; sep = ", "}' "$WORK/$1.results"; }
GB=$(awk -v b="$BYTES" 'BEGIN {print b / 1e9}')
per_gb() { awk -v s="$1" -v g="$GB" 'BEGIN {printf "%.2f", s / g}'; }
row() { # SERVER LABEL
    local secs mbs cpu cl comp
    secs=$(col "$1" 1) mbs=$(col "$1" 2) cpu=$(col "$1" 3) cl=$(col "$1" 4) comp=$(col "$1" 5)
    echo "| $2 | $(fmt "$secs") ($(all "$1" 1)) | $mbs ($(all "$1" 2)) | $(per_gb "$cpu") ($(all "$1" 3) s) | $cl | $comp ($(all "$1" 5)) |"
}
L_MBS=$(col lomob 2)
R_MBS=$(col rclone 2)
RATIO=$(ratio "$L_MBS" "$R_MBS")
MET=$(yes_no "$(awk -v r="$RATIO" 'BEGIN {print (r >= 0.8)}')")
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
REV=$(git -C "$ROOT" rev-parse --short HEAD)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no | grep -q . && echo "+changes" || true)

cat <<EOF
## lomob serve vs rclone serve s3 (#20)

Produced by \`scripts/bench-serve.sh\` (RUNS=$RUNS) on $(date -u '+%Y-%m-%d %H:%M') UTC, lomob $REV$DIRTY; $("$RCLONE" version | head -1).

Machine: $(nproc) cores ($CPU), $(free -g | awk '/^Mem/ {print $2}') GiB RAM, server roots on $(df -P "$WORK" | awk 'NR == 2 {print $1}') ($(df -PT "$WORK" | awk 'NR == 2 {print $2}')). Loopback, TLS on both (self-signed ECDSA P-256 certificates, pinned by the client). Client: lomob's resumable multipart driver (\`backends/examples/s3_upload.rs\`, release, \`--tls-fingerprint\`), one $SIZE_MIB MiB file of random bytes (page cache warm), $PART_MIB MiB parts, $CONC in flight, Content-MD5 on every part and the whole SHA-256 on Complete. Runs alternate lomob, rclone; median of $RUNS (all runs in brackets). Server CPU = user + system seconds of the server process (all threads, /proc/PID/stat) during the run. Complete = from the client's last part to the end of CompleteMultipartUpload. Load average $LOAD_BEFORE before, $LOAD_AFTER after.

| receiver | seconds | MB/s | server CPU s per GB | client CPU s | Complete s |
| --- | --- | --- | --- | --- | --- |
$(row lomob "\`lomob serve\` (release)")
$(row rclone "\`rclone serve s3\`")

Throughput lomob / rclone = **${RATIO}×** ($L_MBS / $R_MBS MB/s); target ≥ 0.8×: $MET.
EOF

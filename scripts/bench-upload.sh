#!/usr/bin/env bash
# Upload throughput and request cost of lomob's resumable multipart driver against
# `rclone copyto`, both uploading the same file to the same local S3 server (moto, started
# here on a free loopback port and stopped by PID at the end).
#
#   scripts/bench-upload.sh            # 2000 MB, 256 MiB parts, 4 in flight
#   BENCH_SIZE_MB=500 BENCH_PART_MIB=64 BENCH_CONCURRENCY=2 scripts/bench-upload.sh
#
# Requests are counted twice: by our client's counters and from moto's request log (which
# also counts rclone's). Results go to the bench-upload section of BENCHMARKS.md. Needs .venv from
# `scripts/services.sh start`. Builds the example in release once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
SIZE_MB=${BENCH_SIZE_MB:-2000}
PART_MIB=${BENCH_PART_MIB:-256}
CONC=${BENCH_CONCURRENCY:-4}

[[ -x $VENV/bin/moto_server && -x $VENV/bin/rclone ]] ||
    { echo "bench: run scripts/services.sh start first (it installs .venv)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/lomob-bench.XXXXXX)
OUT="$WORK/section.md"
MOTO_PID=
cleanup() {
    [[ -n $MOTO_PID ]] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "bench: building the s3_upload example (release)" >&2
(cd "$ROOT" && cargo build --release -q -p lomob-backends --example s3_upload --features testing)
BIN="$ROOT/target/release/examples/s3_upload"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
EP="http://127.0.0.1:$PORT"
for _ in $(seq 300); do
    curl -s -o /dev/null --max-time 1 "$EP/" && break
    sleep 0.1
done
curl -s -f -X PUT "$EP/bench" -o /dev/null

echo "bench: writing a ${SIZE_MB} MB test file" >&2
FILE="$WORK/image.bin"
head -c "$((SIZE_MB * 1000000))" /dev/urandom >"$FILE"
BYTES=$(stat -c %s "$FILE")

# Requests moto logged since line $1, as "PUT=n POST=n ..." and a total.
count_requests() {
    tail -n +"$(($1 + 1))" "$WORK/moto.log" |
        grep -oE '"(GET|PUT|POST|HEAD|DELETE) ' | tr -d '" ' | sort | uniq -c |
        awk '{printf "%s=%s ", $2, $1; t += $1} END {printf "total=%d\n", t}'
}
lines() { wc -l <"$WORK/moto.log"; }
now() { date +%s.%N; }
rate() { python3 -c "print(f'{$BYTES / 1e6 / ($2 - $1):.1f}')"; }
per_gb() { python3 -c "print(f'{$1 / ($BYTES / 1e9):.1f}')"; }

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench

echo "bench: lomob driver" >&2
L0=$(lines)
T0=$(now)
OURS=$(/usr/bin/time -f 'cpu %U %S' -o "$WORK/cpu-ours" "$BIN" --endpoint "$EP" --bucket bench --key lomob.bin --file "$FILE" \
    --journal "$WORK/journal.json" --part-size "$((PART_MIB << 20))" --concurrency "$CONC" |
    grep '^done ')
T1=$(now)
OURS_LOG=$(count_requests "$L0")
OURS_TOTAL=${OURS_LOG##*total=}

echo "bench: lomob driver, one streamed PUT" >&2
L9=$(lines)
T8=$(now)
SINGLE=$(/usr/bin/time -f 'cpu %U %S' -o "$WORK/cpu-single" "$BIN" --endpoint "$EP" --bucket bench --key lomob-single.bin --file "$FILE" \
    --journal "$WORK/journal-single.json" --part-size "$((5 << 30))" |
    grep '^done ')
T9=$(now)
SINGLE_LOG=$(count_requests "$L9")
SINGLE_TOTAL=${SINGLE_LOG##*total=}

run_rclone() { # $1 = chunk size in MiB
    RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
        RCLONE_CONFIG_BENCH_ENDPOINT="$EP" RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=bench \
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=bench RCLONE_CONFIG_BENCH_REGION=us-east-1 \
        /usr/bin/time -f 'cpu %U %S' -o "$WORK/cpu-rclone-$1" \
        "$VENV/bin/rclone" --config /dev/null copyto "$FILE" "bench:bench/rclone-$1.bin" \
        --s3-chunk-size "${1}M" --s3-upload-concurrency "$CONC" --s3-upload-cutoff 200M
}

echo "bench: rclone copyto, ${PART_MIB} MiB chunks" >&2
L1=$(lines)
T2=$(now)
run_rclone "$PART_MIB"
T3=$(now)
RC_LOG=$(count_requests "$L1")
RC_TOTAL=${RC_LOG##*total=}

echo "bench: rclone copyto, default 5 MiB chunks" >&2
L2=$(lines)
T4=$(now)
run_rclone 5
T5=$(now)
RC5_LOG=$(count_requests "$L2")
RC5_TOTAL=${RC5_LOG##*total=}

cpu() { awk '/^cpu/ {printf "%.1f", $2 + $3}' "$1"; }
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
cat >"$OUT" <<EOF
## Upload benchmark: lomob's upload driver (resumable multipart, and one streamed PUT) vs rclone

Run on $(date -u +%Y-%m-%d) by \`scripts/bench-upload.sh\`: one ${SIZE_MB} MB file of random bytes
uploaded to a local moto S3 server (loopback, in memory) on a $(nproc)-core machine
(${CPU}). ${CONC} parts in flight for both tools. Request counts come from moto's request
log; ours are also counted by the client (\`RequestCounters\`). On loopback the server
(Python) is the bottleneck, so throughput compares the clients' overhead, not a real uplink;
the request counts are what S3 would bill. Client CPU (user + system seconds) is the steadier
figure when the machine is shared (load average at the end: ${LOAD}).

| client | part size | seconds | MB/s | client CPU s | requests (moto log) | requests per GB |
| --- | --- | --- | --- | --- | --- | --- |
| lomob \`upload_resumable\` (example \`s3_upload\`, release) | ${PART_MIB} MiB | $(python3 -c "print(f'{$T1 - $T0:.1f}')") | $(rate "$T0" "$T1") | $(cpu "$WORK/cpu-ours") | ${OURS_LOG} | $(per_gb "$OURS_TOTAL") |
| lomob, one streamed PUT (\`single-put-max\`, the default for images up to 5 GiB) | whole object | $(python3 -c "print(f'{$T9 - $T8:.1f}')") | $(rate "$T8" "$T9") | $(cpu "$WORK/cpu-single") | ${SINGLE_LOG} | $(per_gb "$SINGLE_TOTAL") |
| \`rclone copyto\` $("$VENV/bin/rclone" version | head -1 | awk '{print $2}') | ${PART_MIB} MiB | $(python3 -c "print(f'{$T3 - $T2:.1f}')") | $(rate "$T2" "$T3") | $(cpu "$WORK/cpu-rclone-$PART_MIB") | ${RC_LOG} | $(per_gb "$RC_TOTAL") |
| \`rclone copyto\`, default chunk | 5 MiB | $(python3 -c "print(f'{$T5 - $T4:.1f}')") | $(rate "$T4" "$T5") | $(cpu "$WORK/cpu-rclone-5") | ${RC5_LOG} | $(per_gb "$RC5_TOTAL") |

Our client's own counts: multipart \`${OURS#done }\`; one PUT \`${SINGLE#done }\`.

Notes:
- lomob reads the file once, in order, computing its SHA-256 and MD5 while sending (the
  object carries a fingerprint known before reading, so a resumed upload can never be
  completed from a changed source); every part's MD5 goes in Content-MD5, and the one PUT's
  ETag is checked against the MD5. rclone hashes MD5 for its own metadata too.
- Each in-flight part is one buffer: memory is about ${CONC} x ${PART_MIB} MiB for both tools
  (lomob caps parts read ahead plus parts in flight at 1 GiB whatever the concurrency). The
  streamed PUT holds at most 8 MiB.
- At Deep Archive prices (\$0.05 per 1,000 PUT/POST/LIST) the 5 MiB default costs about
  $(python3 -c "print(f'\${$RC5_TOTAL / ($BYTES / 1e9) * 0.05 / 1000 * 250:.3f}')") per 250 GB library in requests, ${PART_MIB} MiB parts
  $(python3 -c "print(f'\${$OURS_TOTAL / ($BYTES / 1e9) * 0.05 / 1000 * 250:.4f}')").
EOF
cat "$OUT"
# Replace this script's section of BENCHMARKS.md, keeping the others.
python3 "$ROOT/scripts/bench-section.py" "$ROOT/BENCHMARKS.md" "$OUT" bench-upload

#!/usr/bin/env bash
# How fast the local S3 test server (moto) takes the same bytes as one large object, as
# 16 MB objects one at a time, and as 16 MB objects four at a time, with curl as the client
# (no lomob code involved). Explains the backup benchmark: lomob sends an image as one large
# PUT, restic sends 16 MB packs several at a time.
#
#   scripts/bench-moto-ingest.sh       measure and write the bench-moto-ingest section of BENCHMARKS.md
#
# Knobs: SIZE_MB [3000], CHUNK_MB [16], RUNS [2], NO_WRITE=1 to print only. Every measured
# upload gets a fresh moto server on a free loopback port (stopped by PID). Needs .venv from
# `scripts/services.sh start`, curl, python3.
set -euo pipefail
NAME=bench-moto-ingest
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MB=${SIZE_MB:-3000}
CHUNK_MB=${CHUNK_MB:-16}
RUNS=${RUNS:-2}
WORK=$(mktemp -d /tmp/lomob-moto-ingest.XXXXXX)
MP=
cleanup() {
    [[ -n $MP ]] && kill "$MP" 2>/dev/null && wait "$MP" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

[[ -x $ROOT/.venv/bin/moto_server ]] || { log "no .venv: run scripts/services.sh start once"; exit 1; }

log "writing ${SIZE_MB} MB of random bytes and ${CHUNK_MB} MB pieces of them"
head -c "$((SIZE_MB * 1000000))" /dev/urandom >"$WORK/big"
mkdir "$WORK/pieces"
split -b "$((CHUNK_MB * 1000000))" "$WORK/big" "$WORK/pieces/p_"
PIECES=$(ls "$WORK/pieces" | wc -l)

start() {
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    setsid "$ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
    MP=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
    curl -s -f -X PUT "http://127.0.0.1:$PORT/bench" -o /dev/null
    cat "$WORK/big" "$WORK/pieces"/* >/dev/null # warm cache: measure the server, not the disk
}
stop() { kill "$MP"; wait "$MP" 2>/dev/null || true; MP=; }
timed() { # timed LABEL CMD...: prints seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.1f}')"
}
one() { curl -s -f -T "$WORK/big" "http://127.0.0.1:$PORT/bench/big" -o /dev/null; }
pieces() { # pieces N: N uploads at once
    ls "$WORK/pieces" | xargs -P"$1" -I{} curl -s -f -T "$WORK/pieces/{}" "http://127.0.0.1:$PORT/bench/{}" -o /dev/null
}

declare -a A B C
for r in $(seq "$RUNS"); do
    start; A+=("$(timed one)"); stop
    start; B+=("$(timed pieces 1)"); stop
    start; C+=("$(timed pieces 4)"); stop
    log "round $r: one ${A[-1]} s, pieces one at a time ${B[-1]} s, four at a time ${C[-1]} s"
done

MOTO=$("$ROOT/.venv/bin/python" -c 'import moto; print(moto.__version__)')
OUT="$WORK/section.md"
{
    echo "## Local S3 server (moto) ingest rate by object size"
    echo
    echo "Produced by \`scripts/bench-moto-ingest.sh\` (SIZE_MB=$SIZE_MB, CHUNK_MB=$CHUNK_MB, RUNS=$RUNS) on $(date -u '+%Y-%m-%d %H:%M UTC'): the same $SIZE_MB MB of random bytes PUT to a fresh moto $MOTO server with curl, page cache warm. No lomob code runs here."
    echo
    echo "| upload | seconds, each run | MB/s (first run) |"
    echo "| --- | --- | --- |"
    mbs() { python3 -c "print(f'{$SIZE_MB / $1:.0f}')"; }
    echo "| one object of $SIZE_MB MB | ${A[*]} | $(mbs "${A[0]}") |"
    echo "| $PIECES objects of $CHUNK_MB MB, one at a time | ${B[*]} | $(mbs "${B[0]}") |"
    echo "| $PIECES objects of $CHUNK_MB MB, four at a time | ${C[*]} | $(mbs "${C[0]}") |"
} >"$OUT"
cat "$OUT"
if [[ ${NO_WRITE:-0} != 1 ]]; then
    python3 "$ROOT/scripts/bench-section.py" "$ROOT/BENCHMARKS.md" "$OUT" bench-moto-ingest
fi

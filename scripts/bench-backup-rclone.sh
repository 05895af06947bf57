#!/usr/bin/env bash
# The backup benchmark's wall-time comparison on the second local S3 implementation,
# `rclone serve s3` (Go, writing to a local folder), where a large single PUT costs what it
# costs on a real store: lomob's first backup (`backup --pack-now`: scan, then one image
# straight into the archive) against `restic backup` of the same corpus to the same server.
# (`scripts/bench-backup.sh` does the full comparison on moto, whose ingest of one large object
# is slow; see `scripts/bench-moto-ingest.sh`.)
#
#   scripts/bench-backup-rclone.sh     measure and write the bench-backup-rclone section of BENCHMARKS.md
#
# Knobs: RUNS [3], BENCH_DIR [/tmp/lomob-bench] (corpus: bench-scan.sh's "media" tree),
# LOMOB [target/release/lomob], NO_WRITE=1 to print only. Root: the page cache is dropped
# before every measured command. Each command gets a fresh server and folder (stopped by PID).
# Needs .venv from `scripts/services.sh start` (rclone), restic, jq, python3.
set -euo pipefail
NAME=bench-backup-rclone
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
WORK=${BENCH_DIR:-/tmp/lomob-bench}
MEDIA=$WORK/media
LOMOB=${LOMOB:-$ROOT/target/release/lomob}
TMP=$(mktemp -d /tmp/lomob-bench-rclone.XXXXXX)
RP=
cleanup() {
    [[ -n $RP ]] && kill "$RP" 2>/dev/null && wait "$RP" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

[[ $(id -u) == 0 ]] || die "needs root to drop the page cache"
[[ -x $ROOT/.venv/bin/rclone ]] || die "no .venv: run scripts/services.sh start once"
command -v restic >/dev/null || die "restic is not installed (apt-get install -y restic)"
[[ -d $MEDIA ]] || "$ROOT/scripts/bench-scan.sh" --corpus-only
[[ -x $LOMOB ]] || (cd "$ROOT" && cargo build --release)
CORPUS=$(du -sb "$MEDIA" | cut -f1)
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret RESTIC_PASSWORD=bench

start() {
    DATA=$TMP/server
    rm -rf "$DATA"
    mkdir -p "$DATA/lstage" "$DATA/larchive" "$DATA/restic"
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    EP=http://127.0.0.1:$port
    setsid "$ROOT/.venv/bin/rclone" serve s3 --addr "127.0.0.1:$port" \
        --auth-key "benchkey,benchsecret" --config /dev/null "$DATA" >"$TMP/server.log" 2>&1 &
    RP=$!
    for _ in $(seq 100); do curl -s -o /dev/null "$EP/" && break; sleep 0.1; done
}
stop() { kill "$RP"; wait "$RP" 2>/dev/null || true; RP=; }

# measure NAME CMD...: wall seconds and /proc io of a wrapper that reaps CMD.
measure() {
    local name=$1
    shift
    sync
    echo 3 >/proc/sys/vm/drop_caches
    local t0 t1
    t0=$(date +%s.%N)
    bash -c 'out=$1; shift; "$@" >"$out.out" 2>"$out.err"; rc=$?; cat /proc/$$/io >"$out.io"; exit $rc' _ "$TMP/$name" "$@" ||
        { tail -n 20 "$TMP/$name.err" >&2; die "$* failed"; }
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.2f}')" >"$TMP/$name.t"
    log "  $name: $(cat "$TMP/$name.t") s"
}

write_config() {
    cat >"$TMP/lomob.toml" <<TOML
[sites.bench]
iso-size = "5GB"
[sites.bench.stage]
kind = "s3"
endpoint = "$EP"
bucket = "lstage"
access-key-id = { env = "AWS_ACCESS_KEY_ID" }
secret-access-key = { env = "AWS_SECRET_ACCESS_KEY" }
[sites.bench.archive]
kind = "s3"
endpoint = "$EP"
bucket = "larchive"
access-key-id = { env = "AWS_ACCESS_KEY_ID" }
secret-access-key = { env = "AWS_SECRET_ACCESS_KEY" }
TOML
}

log "corpus $MEDIA: $CORPUS bytes; $RUNS rounds of lomob, restic"
for r in $(seq "$RUNS"); do
    start
    write_config
    rm -rf "$TMP/db"
    measure "lomob-$r" "$LOMOB" --config "$TMP/lomob.toml" --db "$TMP/db" backup "$MEDIA" --pack-now --no-progress --json
    du -sb "$DATA/larchive" | cut -f1 >"$TMP/lomob-$r.stored"
    stop
    start
    rm -rf "$TMP/restic-cache"
    RESTIC_CACHE_DIR=$TMP/restic-cache restic -r "s3:$EP/restic" init >/dev/null
    measure "restic-$r" env RESTIC_CACHE_DIR="$TMP/restic-cache" restic -r "s3:$EP/restic" backup --quiet "$MEDIA"
    du -sb "$DATA/restic" | cut -f1 >"$TMP/restic-$r.stored"
    stop
done

RCLONE_V=$("$ROOT/.venv/bin/rclone" version | head -1 | awk '{print $2}')
RESTIC_V=$(restic version | awk '{print $2}')
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
OUT=$TMP/section.md
python3 - "$TMP" "$RUNS" "$CORPUS" >"$TMP/table.md" <<'PY'
import json, os, statistics, sys
tmp, runs, corpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rd(p): return open(os.path.join(tmp, p)).read()
def io(p):
    return {l.split(":")[0]: int(l.split(":")[1]) for l in rd(p + ".io").splitlines()}
rows, med = [], {}
for tool, label in (("lomob", "lomob backup --pack-now (scan, one image straight into the archive)"), ("restic", "restic backup (after init)")):
    ts = [float(rd(f"{tool}-{r}.t")) for r in range(1, runs + 1)]
    rb = [io(f"{tool}-{r}")["read_bytes"] / corpus for r in range(1, runs + 1)]
    st = [int(rd(f"{tool}-{r}.stored")) / corpus for r in range(1, runs + 1)]
    med[tool] = statistics.median(ts)
    rows.append(f"| {label} | {statistics.median(ts):.1f} ({min(ts):.1f}–{max(ts):.1f}) | {statistics.median(rb):.2f} | {statistics.median(st):.3f} |")
rep = json.loads(rd(f"lomob-{runs}.out"))[0]
print("| command | wall s, median (min–max) | disk read_bytes ÷ corpus | stored ÷ corpus |")
print("| --- | --- | --- | --- |")
print("\n".join(rows))
print()
print(f"lomob's own report (last run): images {rep['images']}, archived {rep['archived_files']} files, staged {rep['staged_files']}, requests {json.dumps(rep['requests'])}.")
print()
print(f"lomob / restic wall time: {med['lomob'] / med['restic']:.2f}×.")
PY
{
    echo "## Backup wall time on the second local S3 server (rclone serve s3)"
    echo
    echo "Produced by \`scripts/bench-backup-rclone.sh\` (RUNS=$RUNS) on $(date -u '+%Y-%m-%d %H:%M UTC'), lomob $REV: the corpus of \`scripts/bench-backup.sh\` (1030 files, incompressible; $CORPUS bytes by \`du -sb\`), each command against a fresh \`rclone serve s3\` $RCLONE_V (Go, objects written to a local folder) and a fresh manifest or repository, page cache dropped before it; restic $RESTIC_V. lomob's stage and archive are buckets on that server with \`kind = \"s3\"\` (it has no storage classes) and default settings."
    echo
    cat "$TMP/table.md"
} >"$OUT"
cat "$OUT"
if [[ ${NO_WRITE:-0} != 1 ]]; then
    python3 "$ROOT/scripts/bench-section.py" "$ROOT/BENCHMARKS.md" "$OUT" bench-backup-rclone
fi

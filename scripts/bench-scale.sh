#!/usr/bin/env bash
# Scale benchmark for lomob (#16, "A million files: bounded memory, instant status, a compact
# manifest"): on a library of FILES tiny files, the wall time and peak RSS of the everyday
# commands against #16's targets, and the manifest's size on disk per file.
#
#   scripts/bench-scale.sh              generate the library (or reuse it), measure, write the
#                                       bench-scale section of BENCHMARKS.md
#   scripts/bench-scale.sh --tree-only  generate the library (or reuse it) and stop
#   scripts/bench-scale.sh --clean      remove the work dir (the library with it) and stop
#
# Environment knobs (defaults in brackets):
#   BENCH_DIR   work dir, the only place this script writes outside BENCHMARKS.md
#               [/tmp/lomob-bench-scale]
#   FILES       files in the library [1000000]
#   DIRS        folders they are spread over, two levels (dNN/dNNNN) [2000]
#   SIZE        bytes per file, pseudo-random, distinct per file [64]
#   RUNS        runs of each repeatable step (no-change scan and find, status, list,
#               sync --dry-run); the median is reported [3]
#   NEW         new files written into existing folders before the last scan and sync [1000]
#   FULL_SYNC   1: stage the whole library with a first `lomob sync --site local` (timed, once),
#               so the sync after the NEW files is the incremental one; 0: skip it, so that
#               sync stages all FILES + NEW files (the section says which was measured) [0:
#               at 1M files the full stage alone takes ~15 minutes here, see below]
#   SYNC        0: no real sync at all, only `sync --dry-run` (a quick run, no staging) [1]
#   LOMOB       lomob binary [target/release/lomob, built here with nice cargo build --release]
#   LOMOB_REV   how the section names a binary given as LOMOB [the repository's git describe]
#   NO_WRITE    1: print the section but leave BENCHMARKS.md alone [0]
#
# Steps, each command under `/usr/bin/time -f '%e %M'` (wall seconds, peak RSS), with a fresh
# manifest and config (LOMOB_DB, LOMOB_CONFIG: one site `local`, stage and archive `kind =
# "fs"` folders in the work dir, pack-threshold "1TB" so a sync only stages):
#   1. first `lomob scan` of the library into the empty manifest (once); manifest size;
#   2. no-change `lomob scan` against a warm `find LIB -printf '%s %T@ %i %p\n'`, RUNS
#      interleaved rounds after one warm-up of each (target: scan ≤ 1.5 × find);
#   3. `lomob status` and `lomob status --json` (target ≤ 0.3 s);
#   4. `lomob list dirs`, and `lomob list files`: time to its first file line (the line after
#      the header, read from a pipe) and to its end;
#   5. `lomob sync --site local --dry-run`, everything still to stage (target ≤ 2 s);
#   6. FULL_SYNC=1: `lomob sync --site local` stages the whole library (once);
#   7. NEW new files of SIZE bytes, then `lomob scan` (once), `sync --dry-run` (RUNS) and, with
#      SYNC=1, `lomob sync --site local` (once: the NEW files, or with FULL_SYNC=0 everything);
#   8. SYNC=1, every file now staged: `lomob status` (RUNS, target ≤ 0.3 s) and a `lomob sync
#      --site local` with nothing to stage (once); manifest size again.
# Every lomob command: peak RSS ≤ 200 MB. Manifest: ≤ 250 bytes a file (du -sb of the manifest
# folder, taken while no lomob process runs). Staging costs 0.75–0.9 ms a file here (200,000
# files: 150–185 s, builds running alongside), so at FILES=1000000 the default run takes about
# 20 minutes, three quarters of it the sync that stages everything; FULL_SYNC=1 stages in a
# sync of its own first, adding the incremental sync (~25 minutes in all); SYNC=0 skips every
# real sync (~5 minutes).
#
# The library is kept for the next run (its stamp file holds FILES, DIRS and SIZE); the NEW
# files, the manifest, the site and the results are removed on exit. The raw results are copied
# to BENCH_DIR/last-bench-scale. Needs: python3, jq, GNU time, find; about FILES × 4 KiB free
# for the library plus as much for the stage, ~2 KB a file for the manifest, 2 × FILES inodes.
set -euo pipefail
NAME=bench-scale
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_DIR:-/tmp/lomob-bench-scale}
FILES=${FILES:-1000000}
DIRS=${DIRS:-2000}
SIZE=${SIZE:-64}
RUNS=${RUNS:-3}
NEW=${NEW:-1000}
FULL_SYNC=${FULL_SYNC:-0}
SYNC=${SYNC:-1}
NO_WRITE=${NO_WRITE:-0}
MARK=.lomob-bench-scale

case "${1:-}" in
    --clean)
        # Only ever remove something that looks like our own work dir.
        if [[ -d $WORK ]]; then
            [[ -f $WORK/$MARK ]] || die "$WORK has no $MARK marker; not removing it"
            rm -rf -- "$WORK"
            log "removed $WORK"
        fi
        exit 0
        ;;
    "") ;;
    --tree-only) TREE_ONLY=1 ;;
    -h|--help) sed -n '2,54p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (only --clean, --tree-only)" ;;
esac

for n in FILES DIRS SIZE RUNS NEW; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, not '${!n}'"
done
((FILES >= DIRS && DIRS >= 1 && SIZE >= 16 && RUNS >= 1)) || die "need FILES ≥ DIRS ≥ 1, SIZE ≥ 16, RUNS ≥ 1"
[[ $SYNC == 1 ]] || FULL_SYNC=0
for tool in python3 jq find du; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install -y $tool)"
done
[[ -x /usr/bin/time ]] || die "GNU time is required (apt-get install -y time)"

if [[ -e $WORK && ! -f $WORK/$MARK ]]; then
    die "$WORK exists but was not made by this script; set BENCH_DIR or remove it"
fi
mkdir -p "$WORK"
touch "$WORK/$MARK"
LIB=$WORK/lib
STAMP="tiny files=$FILES dirs=$DIRS size=$SIZE v1"

# Room for the library (when it is to be made), the stage (every file takes at least a 4 KiB
# block and an inode), the manifest.
need_kb=$((FILES * 2 + 512 * 1024))
need_inodes=$((FILES / 10 + 10000))
[[ -f $LIB.stamp && $(cat "$LIB.stamp") == "$STAMP" ]] || { need_kb=$((need_kb + FILES * 4)); need_inodes=$((need_inodes + FILES)); }
[[ $SYNC == 1 && -z ${TREE_ONLY:-} ]] && { need_kb=$((need_kb + FILES * 4)); need_inodes=$((need_inodes + FILES)); }
free_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
((free_kb > need_kb)) || die "$((free_kb / 1024)) MiB free on $WORK; this needs $((need_kb / 1024)) MiB"
free_inodes=$(df -Pi "$WORK" | awk 'NR==2 {print $4}')
((free_inodes > need_inodes)) || die "$free_inodes free inodes on $WORK; this needs $need_inodes"

# ---------------------------------------------------------------------------------------
# The library: FILES files of SIZE pseudo-random bytes (Python's seeded Mersenne Twister, so
# distinct and the same on every machine) spread evenly over DIRS folders, two levels like
# bench-scan.sh's corpus (a): LIB/dNN/dNNNN/fNNNNNNN.bin. Complete only when its stamp exists.
GEN_PY=$(cat <<'PY'
import os, random, sys
root, files, dirs, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(20240616)
subs = []
for d in range(dirs):
    sub = os.path.join(root, "d%02d" % (d // 100), "d%04d" % d)
    os.makedirs(sub, exist_ok=True)
    subs.append(sub)
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
for i in range(files):
    fd = os.open(os.path.join(subs[i % dirs], "f%07d.bin" % i), flags, 0o644)
    os.write(fd, rng.randbytes(size))
    os.close(fd)
PY
)
# The NEW files of step 7, into existing folders (new-NNNNN.bin; the library has no such names).
NEW_PY=$(cat <<'PY'
import os, sys
root, n, dirs, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    d = (i * 37 + 11) % dirs
    p = os.path.join(root, "d%02d" % (d // 100), "d%04d" % d, "new-%05d.bin" % i)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, os.urandom(size))
    os.close(fd)
PY
)
remove_new() { [[ -d $LIB ]] && find "$LIB" -name 'new-*.bin' -type f -delete; return 0; }

GENERATED=0
if [[ -f $LIB.stamp && $(cat "$LIB.stamp") == "$STAMP" ]]; then
    log "reusing $LIB ($STAMP)"
    remove_new   # left over by a run that was killed
else
    rm -rf -- "$LIB" "$LIB.stamp"
    log "generating $LIB ($STAMP)"
    t0=$SECONDS
    python3 -c "$GEN_PY" "$LIB" "$FILES" "$DIRS" "$SIZE"
    got=$(find "$LIB" -type f | wc -l)
    [[ $got == "$FILES" ]] || die "generating $LIB made $got files, expected $FILES"
    echo "$STAMP" >"$LIB.stamp"
    GENERATED=1
    log "generated $LIB in $((SECONDS - t0)) s"
fi
[[ ${TREE_ONLY:-0} == 1 ]] && exit 0

if [[ -z ${LOMOB:-} ]]; then
    log "building lomob (nice cargo build --release --bin lomob)"
    (cd "$REPO" && nice -n 10 cargo build --release --quiet --bin lomob)
    LOMOB=$REPO/target/release/lomob
    LOMOB_REV="$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'), built here"
fi
[[ -x $LOMOB ]] || die "no lomob binary at $LOMOB"
LOMOB_REV=${LOMOB_REV:-"given as LOMOB=$LOMOB; the repository was at $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"}

# Everything but the library lives in one folder removed on exit: manifest, site, HOME, results.
TMP=$(mktemp -d "$WORK/run.XXXXXX")
RES=$TMP/res
mkdir -p "$RES"
cleanup() {
    remove_new
    if [[ -n ${RES:-} && -d $RES ]]; then
        rm -rf -- "$WORK/last-bench-scale.partial"
        cp -r "$RES" "$WORK/last-bench-scale.partial"
    fi
    rm -rf -- "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
export HOME=$TMP/home XDG_CONFIG_HOME=$TMP/home/.config XDG_DATA_HOME=$TMP/home/.local/share
export XDG_CACHE_HOME=$TMP/home/.cache
mkdir -p "$HOME"
export LOMOB_DB=$TMP/db LOMOB_CONFIG=$TMP/lomob.toml
unset LOMOB_LOG_LEVEL
cat >"$LOMOB_CONFIG" <<EOF
[library]
roots = ["$LIB"]

[sites.local]
stage = { kind = "fs", root = "$TMP/stage" }
archive = { kind = "fs", root = "$TMP/archive" }
pack-threshold = "1TB"
EOF
cp "$LOMOB_CONFIG" "$RES/lomob.toml"

# ---------------------------------------------------------------------------------------
# Helpers. Every measured command appends "wall_s peak_rss_kb" to $RES/NAME.tsv; its stdout
# goes to OUT, its stderr to $RES/NAME.err.
# measure NAME OUT CMD...
measure() {
    local name=$1 out=$2 t rss
    shift 2
    /usr/bin/time -f '%e %M' -o "$RES/$name.time" "$@" >"$out" 2>"$RES/$name.err" ||
        { tail -n 20 "$RES/$name.err" >&2; die "$name failed: $*"; }
    read -r t rss <"$RES/$name.time"
    echo "$t $rss" >>"$RES/$name.tsv"
    log "  $name: $t s, peak RSS $((rss / 1024)) MB"
}
# Time to the first line and to the first line after the header of a command's stdout, read
# from a pipe; the rest is drained and its lines counted. Prints "first_s second_s lines".
FIRST_PY=$(cat <<'PY'
import subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
first = p.stdout.readline()
t1 = time.monotonic()
second = p.stdout.readline()
t2 = time.monotonic()
lines = (first != b"") + (second != b"")
while chunk := p.stdout.read(1 << 20):
    lines += chunk.count(b"\n")
rc = p.wait()
if rc:
    sys.exit(f"exit code {rc}")
print(f"{t1 - t0:.3f} {t2 - t0:.3f} {lines}")
PY
)
# measure_first NAME CMD...: like measure, plus "first_s second_s lines" in $RES/NAME.first.
measure_first() {
    local name=$1 t rss
    shift
    python3 -c "$FIRST_PY" /usr/bin/time -f '%e %M' -o "$RES/$name.time" "$@" >>"$RES/$name.first" 2>"$RES/$name.err" ||
        { tail -n 20 "$RES/$name.err" >&2; die "$name failed: $*"; }
    read -r t rss <"$RES/$name.time"
    echo "$t $rss" >>"$RES/$name.tsv"
    log "  $name: first lines after $(tail -n 1 "$RES/$name.first" | cut -d' ' -f1-2) s, end after $t s, peak RSS $((rss / 1024)) MB"
}
LOADS=
step() { # step TEXT: a log line, and the 1-min load before the step
    LOADS+="${LOADS:+, }${1%%.*}: $(cut -d' ' -f1 /proc/loadavg)"
    STEP_T0=$SECONDS
    log "$*"
}
done_step() { echo "$1 $((SECONDS - STEP_T0))" >>"$RES/step-secs.txt"; }
manifest_bytes() { du -sb "$LOMOB_DB" | cut -f1; }
status_json() { "$LOMOB" status --json >"$RES/status.json" && cat "$RES/status.json"; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
LIB_DIRS=$(find "$LIB" -type d | wc -l)
LIB_BYTES=$((FILES * SIZE))
log "library $LIB: $FILES files of $SIZE B in $LIB_DIRS folders; lomob $LOMOB_REV"
if [[ $GENERATED == 0 ]]; then
    log "warming the page cache (reading the library once)"
    warm "$LIB"
fi

# ---------------------------------------------------------------------------------------
# 1. First scan into the empty manifest.
step "1. first scan into an empty manifest"
measure scan-first "$RES/scan-first.json" "$LOMOB" scan --json --no-progress "$LIB"
[[ $(jq -r .new "$RES/scan-first.json") == "$FILES" ]] ||
    die "the first scan recorded $(jq -r .new "$RES/scan-first.json") new files, expected $FILES"
MB_SCAN=$(manifest_bytes)
echo "$MB_SCAN" >"$RES/manifest-after-scan.bytes"
log "  manifest: $MB_SCAN B, $((MB_SCAN / FILES)) B a file"
done_step scan-first

# 2. No-change scan against find, interleaved rounds.
step "2. no-change scan vs find, $RUNS round(s) after a warm-up of each"
find "$LIB" -printf '%s %T@ %i %p\n' >/dev/null
"$LOMOB" scan --json --no-progress "$LIB" >"$RES/scan-warmup.json"
[[ $(jq -r '.new + .changed + .deleted' "$RES/scan-warmup.json") == 0 ]] || die "the no-change scan found changes"
for _ in $(seq "$RUNS"); do
    measure find /dev/null find "$LIB" -printf '%s %T@ %i %p\n'
    measure scan-nochange "$RES/scan-nochange.json" "$LOMOB" scan --json --no-progress "$LIB"
done
[[ $(jq -r .unchanged "$RES/scan-nochange.json") == "$FILES" ]] || die "the no-change scan saw $(jq -r .unchanged "$RES/scan-nochange.json") unchanged files, expected $FILES"
done_step scan-nochange

# 3. Status.
step "3. status, status --json"
for _ in $(seq "$RUNS"); do measure status "$RES/status.out" "$LOMOB" status; done
for _ in $(seq "$RUNS"); do measure status-json "$RES/status-json.out" "$LOMOB" status --json; done
[[ $(jq -r .present.files "$RES/status-json.out") == "$FILES" ]] ||
    die "status shows $(jq -r .present.files "$RES/status-json.out") present files, expected $FILES"
done_step status

# 4. Lists.
step "4. list dirs, list files"
for _ in $(seq "$RUNS"); do measure list-dirs /dev/null "$LOMOB" list dirs; done
for _ in $(seq "$RUNS"); do measure_first list-files "$LOMOB" list files; done
got=$(tail -n 1 "$RES/list-files.first" | cut -d' ' -f3)
[[ $got == $((FILES + 2)) ]] || die "lomob list files printed $got lines, expected $((FILES + 2)) (a header, a line a file, a total)"
done_step list

# 5. Dry run, everything to stage.
step "5. sync --dry-run, all $FILES files to stage"
for _ in $(seq "$RUNS"); do measure dry-all "$RES/dry-all.out" "$LOMOB" sync --site local --dry-run; done
done_step dry-all

# 6. The full sync.
if [[ $FULL_SYNC == 1 ]]; then
    step "6. sync, staging all $FILES files"
    measure sync-full "$RES/sync-full.out" "$LOMOB" --no-progress sync --site local
    staged=$(status_json | jq -r '.sites[0].staged.files')
    [[ $staged == "$FILES" ]] || die "after the full sync, status shows $staged staged files, expected $FILES"
    manifest_bytes >"$RES/manifest-after-full-sync.bytes"
    done_step sync-full
fi

# 7. NEW new files: scan, dry run, sync.
step "7. $NEW new files: scan, sync --dry-run, sync"
python3 -c "$NEW_PY" "$LIB" "$NEW" "$DIRS" "$SIZE"
measure scan-new "$RES/scan-new.json" "$LOMOB" scan --json --no-progress "$LIB"
[[ $(jq -r .new "$RES/scan-new.json") == "$NEW" ]] || die "the scan found $(jq -r .new "$RES/scan-new.json") new files, expected $NEW"
for _ in $(seq "$RUNS"); do measure dry-new "$RES/dry-new.out" "$LOMOB" sync --site local --dry-run; done
if [[ $SYNC == 1 ]]; then
    measure sync-new "$RES/sync-new.out" "$LOMOB" --no-progress sync --site local
    staged=$(status_json | jq -r '.sites[0].staged.files')
    [[ $staged == $((FILES + NEW)) ]] || die "after the last sync, status shows $staged staged files, expected $((FILES + NEW))"
fi
done_step new

# 8. Every file staged: status, a sync with nothing to do.
if [[ $SYNC == 1 ]]; then
    step "8. every file staged: status, sync with nothing to stage"
    for _ in $(seq "$RUNS"); do measure status-staged "$RES/status-staged.out" "$LOMOB" status; done
    measure sync-none "$RES/sync-none.out" "$LOMOB" --no-progress sync --site local
    staged=$(status_json | jq -r '.sites[0].staged.files')
    [[ $staged == $((FILES + NEW)) ]] || die "after the no-change sync, status shows $staged staged files, expected $((FILES + NEW))"
    done_step staged
fi
MB_END=$(manifest_bytes)
echo "$MB_END" >"$RES/manifest-at-end.bytes"
log "  manifest: $MB_END B, $((MB_END / (FILES + NEW))) B a file"
remove_new
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# Report.
if [[ $FULL_SYNC == 1 ]]; then
    NEW_SYNC_WHAT="incremental: the $NEW new files, the $FILES others already staged"
elif [[ $SYNC == 1 ]]; then
    NEW_SYNC_WHAT="FULL_SYNC=0, so not incremental: it staged all $((FILES + NEW)) files"
else
    NEW_SYNC_WHAT="not run (SYNC=0)"
fi
python3 - "$RES" "$FILES" "$NEW" "$FULL_SYNC" "$SYNC" "$NEW_SYNC_WHAT" >"$TMP/table.md" <<'PY'
import os, statistics, sys
res, files, new, full_sync, sync, new_sync_what = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1", sys.argv[6]
RSS_MB = 200
def rows(name):
    return [tuple(map(float, l.split())) for l in open(os.path.join(res, name + ".tsv"))]
def spread(v, unit=""):
    if len(v) == 1:
        return f"{v[0]:.2f}{unit} (once)"
    return f"{statistics.median(v):.2f}{unit} ({min(v):.2f}–{max(v):.2f})"
def met(c):
    return "**met**" if c else "**missed**"
print("| step | wall s, median (min–max) | peak RSS MB (max of runs) | reference | ratio | target | met? |")
print("| --- | --- | --- | --- | --- | --- | --- |")
def line(label, name, target=None, limit=None, ref=None, walls=None):
    r = rows(name)
    walls = walls if walls is not None else [t for t, _ in r]
    rss = max(k for _, k in r) / 1024
    t = statistics.median(walls)
    refcell, ratiocell, value = "", "", t
    if ref:
        rt = [t for t, _ in rows(ref[0])]
        value = t / statistics.median(rt)
        refcell = f"{ref[1]}: {spread(rt, ' s')}"
        ratiocell = f"{value:.2f}×"
    targets, missed = [], []
    if limit is not None:
        targets.append(target)
        if value > limit:
            missed.append("time" if not ref else "ratio")
    targets.append(f"RSS ≤ {RSS_MB} MB")
    if rss > RSS_MB:
        missed.append("RSS")
    verdict = met(True) if not missed else met(False) + ": " + ", ".join(missed)
    print(f"| {label} | {spread(walls)} | {rss:.0f} | {refcell} | {ratiocell} | {'; '.join(targets)} | {verdict} |")
def size(label, fname, n):
    b = int(open(os.path.join(res, fname)).read())
    per = b / n
    print(f"| {label} | | | {b:,} B for {n:,} files | {per:.0f} B/file | ≤ 250 B/file | {met(per <= 250)} |")
line(f"1. first `scan` ({files:,} new files)", "scan-first")
size("1. manifest on disk after the first scan (`du -sb`)", "manifest-after-scan.bytes", files)
line("2. no-change `scan`, warm", "scan-nochange", "≤ 1.5× find", 1.5, ref=("find", "`find -printf`, warm"))
line("3. `status`", "status", "≤ 0.3 s", 0.3)
line("3. `status --json`", "status-json", "≤ 0.3 s", 0.3)
line("4. `list dirs > /dev/null`", "list-dirs")
first = [tuple(map(float, l.split()[:2])) for l in open(os.path.join(res, "list-files.first"))]
line("4. `list files`: first file line (after the header) in the pipe", "list-files", walls=[b for _, b in first])
line("4. `list files > pipe`: whole listing", "list-files")
line(f"5. `sync --dry-run`, {files:,} files to stage", "dry-all", "≤ 2 s", 2)
if full_sync:
    line(f"6. `sync`: stages all {files:,} files", "sync-full")
line(f"7. `scan` after {new:,} new files", "scan-new")
line(f"7. `sync --dry-run`, {new:,} new files to stage" + ("" if full_sync else f" (and the {files:,} never staged)"), "dry-new", "≤ 2 s", 2)
if sync:
    line(f"7. `sync` after the new files ({new_sync_what})", "sync-new")
    line(f"8. `status`, all {files + new:,} files staged", "status-staged", "≤ 0.3 s", 0.3)
    line(f"8. `sync` with nothing to stage, all {files + new:,} files staged", "sync-none")
size(("8" if sync else "7") + ". manifest on disk at the end (`du -sb`)" + (", every file staged" if sync else ""), "manifest-at-end.bytes", files + new)
h, f = (statistics.median(v) for v in zip(*first))
if f - h < 0.05:
    whole = statistics.median(t for t, _ in rows("list-files"))
    print(f"\n`lomob list files` printed its header together with its first file line, {h:.2f} s after it started, of the {whole:.2f} s the whole listing took (medians).")
PY

STEP_SECS=$(awk '{printf "%s%s %d s", sep, $1, $2; sep = ", "}' "$RES/step-secs.txt")
{
echo "## Scale benchmark"
echo
echo "Produced by \`scripts/bench-scale.sh\` (FILES=$FILES, DIRS=$DIRS, SIZE=$SIZE, RUNS=$RUNS, NEW=$NEW, FULL_SYNC=$FULL_SYNC, SYNC=$SYNC) on $(date -u '+%Y-%m-%d %H:%M UTC'), lomob $LOMOB_REV."
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -h | awk '/^Mem:/ {print $2}') RAM, library, manifest and site on $(df -P "$WORK" | awk 'NR==2 {print $1}') ($(df -hPT "$WORK" | awk 'NR==2 {print $2}')); kernel $(uname -r). The machine is shared with another engineer's builds: load average $LOAD_START at the start, $LOAD_END at the end; 1-min load before each step: $LOADS."
echo
echo "Library: $FILES files of $SIZE pseudo-random bytes ($LIB_BYTES B) in $DIRS folders two levels deep ($LIB_DIRS folders in all), page cache warm. A fresh manifest (LOMOB_DB) and this config (LOMOB_CONFIG):"
echo
echo '```toml'
sed "s|$TMP|TMP|g; s|$LIB|LIB|g" "$LOMOB_CONFIG"
echo '```'
echo
echo "Every command ran under \`/usr/bin/time -f '%e %M'\` (wall seconds, peak RSS); $(if ((RUNS > 1)); then echo "those run $RUNS times show the median and min–max, the others ran once"; else echo "RUNS=1, so each ran once"; fi). The commands, in this order:"
echo
echo '```'
echo "1. lomob scan --json --no-progress LIB                 (empty manifest)"
echo "   du -sb DB                                          (manifest size, no lomob process running)"
printf '%s\n' "2. find LIB -printf '%s %T@ %i %p\\n' > /dev/null       (one warm-up of each, then $RUNS round(s) of both)"
echo "   lomob scan --json --no-progress LIB                 (no change)"
echo "3. lomob status;  lomob status --json"
echo "4. lomob list dirs > /dev/null"
echo "   lomob list files | (first lines timed, the rest read and counted)"
echo "5. lomob sync --site local --dry-run"
if [[ $FULL_SYNC == 1 ]]; then
echo "6. lomob --no-progress sync --site local              (stages everything)"
fi
echo "7. (write $NEW new files of $SIZE B, spread over the folders)"
echo "   lomob scan --json --no-progress LIB"
echo "   lomob sync --site local --dry-run"
if [[ $SYNC == 1 ]]; then
echo "   lomob --no-progress sync --site local              ($NEW_SYNC_WHAT)"
echo "8. lomob status                                      (every file staged)"
echo "   lomob --no-progress sync --site local              (nothing to stage)"
fi
echo "   du -sb DB"
echo '```'
echo
cat "$TMP/table.md"
echo
echo "Wall time of each step of the script (all runs): $STEP_SECS."
} >"$TMP/section.md"
cat "$TMP/section.md"
rm -rf -- "$WORK/last-bench-scale" "$WORK/last-bench-scale.partial"
cp "$TMP/section.md" "$RES/section.md"
cp -r "$RES" "$WORK/last-bench-scale"
RES=

if [[ $NO_WRITE != 1 ]]; then
    python3 "$REPO/scripts/bench-section.py" "$REPO/BENCHMARKS.md" "$TMP/section.md" bench-scale
    log "wrote the bench-scale section of BENCHMARKS.md"
fi

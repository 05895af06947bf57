#!/usr/bin/env bash
# Scan benchmark for lomob: first-scan throughput, no-change rescan speed, peak memory.
#
#   scripts/bench-scan.sh            generate the corpora (or reuse them) and measure
#   scripts/bench-scan.sh --clean    remove the work dir and stop
#   scripts/bench-scan.sh --corpus-only   generate the corpora (or reuse them) and stop
#
# Environment knobs (defaults in brackets):
#   BENCH_DIR     work dir, the only place this script writes outside BENCHMARKS.md
#                 [/tmp/lomob-bench]
#   RUNS          measured runs per command; the median is reported [3]
#   SMALL_FILES   files in corpus (a) [200000];  SMALL_DIRS  folders in (a) [2000]
#   PHOTOS        photos in corpus (b) [1000];   VIDEOS      videos in (b) [30]
#   COLD          1: also measure with dropped page caches, 0: skip, auto: if root [auto]
#   RESTIC        1: compare with restic, 0: skip [1 if restic is installed]
#   LOMOB         lomob binary [target/release/lomob, built with cargo build --release]
#   NO_WRITE      1: print the table but leave BENCHMARKS.md alone [0]
#
# Needs: hyperfine, openssl, python3, jq, GNU time (/usr/bin/time), find; restic optional.
# Corpus contents are pseudo-random (AES-CTR keystream, so incompressible and distinct per
# file) and their shape is fixed by a seed, so every run measures the same tree.
set -euo pipefail
NAME=bench-scan
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_DIR:-/tmp/lomob-bench}
RUNS=${RUNS:-3}
SMALL_FILES=${SMALL_FILES:-200000}
SMALL_DIRS=${SMALL_DIRS:-2000}
PHOTOS=${PHOTOS:-1000}
VIDEOS=${VIDEOS:-30}
COLD=${COLD:-auto}
NO_WRITE=${NO_WRITE:-0}
if [[ -z ${RESTIC:-} ]]; then
    if command -v restic >/dev/null; then RESTIC=1; else RESTIC=0; fi
fi


case "${1:-}" in
    --clean)
        # Only ever remove something that looks like our own work dir.
        if [[ -d $WORK ]]; then
            [[ -f $WORK/.lomob-bench ]] || die "$WORK has no .lomob-bench marker; not removing it"
            rm -rf -- "$WORK"
            log "removed $WORK"
        fi
        exit 0
        ;;
    "") ;;
    --corpus-only) CORPUS_ONLY=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (only --clean, --corpus-only)" ;;
esac

for tool in hyperfine openssl python3 jq find; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install -y $tool)"
done
[[ -x /usr/bin/time ]] || die "GNU time is required (apt-get install -y time)"
[[ $RESTIC == 1 ]] && ! command -v restic >/dev/null && die "RESTIC=1 but restic is not installed"
if [[ $COLD == auto ]]; then
    if [[ $(id -u) == 0 && -w /proc/sys/vm/drop_caches ]]; then COLD=1; else COLD=0; fi
fi

if [[ -z ${LOMOB:-} ]]; then
    log "building lomob (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet --bin lomob)
    LOMOB=$REPO/target/release/lomob
fi
[[ -x $LOMOB ]] || die "no lomob binary at $LOMOB"

if [[ -e $WORK && ! -f $WORK/.lomob-bench ]]; then
    die "$WORK exists but was not made by this script; set BENCH_DIR or remove it"
fi
mkdir -p "$WORK"
touch "$WORK/.lomob-bench"

# Everything temporary (databases, HOME, restic repo, results) lives in one folder that is
# removed on exit, whatever happens. The corpora are kept for the next run.
TMP=$(mktemp -d "$WORK/run.XXXXXX")
cleanup() { rm -rf -- "$TMP"; }
trap cleanup EXIT
export HOME=$TMP/home XDG_CONFIG_HOME=$TMP/home/.config XDG_DATA_HOME=$TMP/home/.local/share
export XDG_CACHE_HOME=$TMP/home/.cache
mkdir -p "$HOME"
unset LOMOB_DB LOMOB_CONFIG

SMALL=$WORK/small
MEDIA=$WORK/media

# ---------------------------------------------------------------------------------------
# Corpus generation. A python writer cuts files out of one fast AES-CTR keystream
# (openssl enc, ~1 GB/s here; /dev/urandom is several times slower). A corpus is complete
# only when its stamp file (holding its parameters) exists; otherwise it is regenerated.
GEN_PY=$(cat <<'PY'
import os, random, sys
kind, root = sys.argv[1], sys.argv[2]
small_files, small_dirs, photos, videos = map(int, sys.argv[3:7])
src = sys.stdin.buffer
rng = random.Random(20240601)
def put(path, size):
    data = src.read(size)
    if len(data) != size:
        sys.exit("keystream ended early")
    with open(path, "wb") as f:
        f.write(data)
if kind == "small":
    # small_files files of 1-4 KiB spread evenly over small_dirs folders (two levels).
    for i in range(small_files):
        d = i % small_dirs
        sub = os.path.join(root, "d%02d" % (d // 100), "d%04d" % d)
        if i < small_dirs:
            os.makedirs(sub, exist_ok=True)
        put(os.path.join(sub, "f%06d.bin" % i), rng.randint(1024, 4096))
else:
    # A YYYY/MM tree: photos of 1.5-3 MB, videos of 20-40 MB, spread over 2019-2024.
    items = [("IMG_%05d.jpg" % i, rng.randint(1_500_000, 3_000_000)) for i in range(photos)]
    items += [("VID_%04d.mp4" % i, rng.randint(20_000_000, 40_000_000)) for i in range(videos)]
    rng.shuffle(items)
    for n, (name, size) in enumerate(items):
        month = n * 72 // len(items)
        sub = os.path.join(root, "%d" % (2019 + month // 12), "%02d" % (month % 12 + 1))
        os.makedirs(sub, exist_ok=True)
        put(os.path.join(sub, name), size)
PY
)
gen() { # gen KIND DIR STAMP
    local kind=$1 dir=$2 stamp=$3
    if [[ -f $dir.stamp && $(cat "$dir.stamp") == "$stamp" ]]; then
        log "reusing $dir ($stamp)"
        return
    fi
    rm -rf -- "$dir" "$dir.stamp"
    log "generating $dir ($stamp)"
    local t0=$SECONDS
    { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:lomob-$kind" -in /dev/zero 2>/dev/null || true; } |
        python3 -c "$GEN_PY" "$kind" "$dir" "$SMALL_FILES" "$SMALL_DIRS" "$PHOTOS" "$VIDEOS"
    # openssl dies of SIGPIPE once python is done: that is the normal end (ignored above).
    local want
    if [[ $kind == small ]]; then want=$SMALL_FILES; else want=$((PHOTOS + VIDEOS)); fi
    local got
    got=$(find "$dir" -type f | wc -l)
    [[ $got == "$want" ]] || die "generating $dir made $got files, expected $want"
    echo "$stamp" > "$dir.stamp"
    log "generated $dir in $((SECONDS - t0)) s"
}
gen small "$SMALL" "small files=$SMALL_FILES dirs=$SMALL_DIRS v1"
gen media "$MEDIA" "media photos=$PHOTOS videos=$VIDEOS v1"
[[ ${CORPUS_ONLY:-0} == 1 ]] && exit 0

SMALL_BYTES=$(find "$SMALL" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}')
MEDIA_BYTES=$(find "$MEDIA" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}')
MEDIA_COUNT=$(find "$MEDIA" -type f | wc -l)
find "$MEDIA" -type f -print0 | sort -z > "$TMP/media.list"

# ---------------------------------------------------------------------------------------
# Helpers.
DROP='sync; echo 3 > /proc/sys/vm/drop_caches'
# hf NAME PREPARE CMD: hyperfine RUNS runs, results in $TMP/NAME.json.
hf() {
    local name=$1 prep=$2 cmd=$3
    local args=(--runs "$RUNS" --style basic --export-json "$TMP/$name.json" --shell bash)
    [[ -n $prep ]] && args+=(--prepare "$prep")
    hyperfine "${args[@]}" "$cmd" >&2
}
# jq over a hyperfine result: median, min, max (seconds).
SCAN=("$LOMOB" scan --no-progress)

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# 1. First scan of the media corpus: lomob vs two parallel openssl sha256 processes.
OPENSSL_CMD="xargs -0 -P 2 -n 100 openssl dgst -sha256 < '$TMP/media.list' > /dev/null"
LOMOB_MEDIA_CMD="${SCAN[*]} --db '$TMP/db-media' '$MEDIA' > /dev/null"
log "1. first scan of media, warm"
warm "$MEDIA"
hf media-lomob-warm "rm -rf '$TMP/db-media'" "$LOMOB_MEDIA_CMD"
hf media-openssl-warm "" "$OPENSSL_CMD"
# lomob's own report, to split the process time into scan and open/close overheads.
rm -rf "$TMP/db-media"
"${SCAN[@]}" --json --db "$TMP/db-media" "$MEDIA" > "$TMP/media.report.json"
[[ $(jq -r .files_hashed "$TMP/media.report.json") == "$MEDIA_COUNT" ]] ||
    die "lomob hashed $(jq -r .files_hashed "$TMP/media.report.json") media files, expected $MEDIA_COUNT"
MEDIA_INNER=$(jq -r .elapsed_secs "$TMP/media.report.json")
rm -rf "$TMP/db-media"
if [[ $COLD == 1 ]]; then
    log "1. first scan of media, cold (page cache dropped before every run)"
    hf media-lomob-cold "rm -rf '$TMP/db-media'; $DROP" "$LOMOB_MEDIA_CMD"
    hf media-openssl-cold "$DROP" "$OPENSSL_CMD"
    rm -rf "$TMP/db-media"
fi

# ---------------------------------------------------------------------------------------
# 3a. First scan of the small-file corpus, under GNU time for peak RSS (fresh db each run).
log "3. first scan of small files (peak memory), $RUNS runs"
warm "$SMALL"
: > "$TMP/small-first.tsv"
for _ in $(seq "$RUNS"); do
    rm -rf "$TMP/db-small"
    /usr/bin/time -v -o "$TMP/time.txt" "${SCAN[@]}" --json --db "$TMP/db-small" "$SMALL" > "$TMP/small.report.json"
    rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$TMP/time.txt")
    printf '%s\t%s\n' "$(jq -r .elapsed_secs "$TMP/small.report.json")" "$rss" >> "$TMP/small-first.tsv"
done
[[ $(jq -r .files_hashed "$TMP/small.report.json") == "$SMALL_FILES" ]] ||
    die "lomob hashed $(jq -r .files_hashed "$TMP/small.report.json") small files, expected $SMALL_FILES"
SMALL_FIRST_T=$(cut -f1 "$TMP/small-first.tsv" | median_of)
SMALL_FIRST_RSS=$(cut -f2 "$TMP/small-first.tsv" | median_of)
SMALL_FIRST_RSS_ALL=$(cut -f2 "$TMP/small-first.tsv" | paste -sd, -)
DB_SIZE=$(du -sh "$TMP/db-small" | cut -f1)

# ---------------------------------------------------------------------------------------
# 2. No-change rescan of the small-file corpus ($TMP/db-small is now populated).
log "2. no-change rescan of small files"
LOMOB_RESCAN_CMD="${SCAN[*]} --db '$TMP/db-small' '$SMALL' > /dev/null"
FIND_CMD="find '$SMALL' -printf '%s %T@ %i %p\n' > /dev/null"
"${SCAN[@]}" --json --db "$TMP/db-small" "$SMALL" > "$TMP/rescan.report.json"   # warm-up
[[ $(jq -r '.files_hashed' "$TMP/rescan.report.json") == 0 ]] || die "the rescan hashed files"
RESCAN_INNER=$(jq -r .elapsed_secs "$TMP/rescan.report.json")
hf rescan-lomob "" "$LOMOB_RESCAN_CMD"
hf rescan-find "" "$FIND_CMD"
: > "$TMP/rescan-rss.txt"
for _ in $(seq "$RUNS"); do
    /usr/bin/time -v -o "$TMP/time.txt" "${SCAN[@]}" --db "$TMP/db-small" "$SMALL" > /dev/null
    awk -F': ' '/Maximum resident/ {print $2}' "$TMP/time.txt" >> "$TMP/rescan-rss.txt"
done
RESCAN_RSS=$(median_of < "$TMP/rescan-rss.txt")
RESCAN_RSS_ALL=$(paste -sd, - < "$TMP/rescan-rss.txt")
if [[ $RESTIC == 1 ]]; then
    export RESTIC_PASSWORD=lomob-bench RESTIC_REPOSITORY=$TMP/restic RESTIC_CACHE_DIR=$TMP/restic-cache
    restic init --quiet > /dev/null
    log "restic: first backup of the small files (not timed)"
    restic backup --quiet "$SMALL" > /dev/null
    hf rescan-restic "" "restic backup --quiet '$SMALL' > /dev/null"
fi
if [[ $COLD == 1 ]]; then
    log "2. no-change rescan, cold (dentry/inode caches dropped before every run)"
    hf rescan-lomob-cold "$DROP" "$LOMOB_RESCAN_CMD"
    hf rescan-find-cold "$DROP" "$FIND_CMD"
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# Report.
L_W=$(med media-lomob-warm); O_W=$(med media-openssl-warm)
L_W_MB=$(mbps "$MEDIA_BYTES" "$L_W"); O_W_MB=$(mbps "$MEDIA_BYTES" "$O_W")
R_W=$(ratio "$O_W" "$L_W")
RS_L=$(med rescan-lomob); RS_F=$(med rescan-find)
RS_R=$(ratio "$RS_L" "$RS_F")
MAX_RSS=$(( SMALL_FIRST_RSS > RESCAN_RSS ? SMALL_FIRST_RSS : RESCAN_RSS ))

{
echo "| measurement | lomob | reference | ratio | target |"
echo "| --- | --- | --- | --- | --- |"
echo "| 1. first scan of (b), warm: throughput (median s, min–max) | $L_W_MB MB/s ($(fmt "$L_W") s, $(spread media-lomob-warm)) | openssl sha256 ×2: $O_W_MB MB/s ($(fmt "$O_W") s, $(spread media-openssl-warm)) | lomob = $R_W× openssl | ≥ 0.9×: $(yes_no "$(awk -v r="$R_W" 'BEGIN{print (r>=0.9)}')") |"
if [[ $COLD == 1 ]]; then
    L_C=$(med media-lomob-cold); O_C=$(med media-openssl-cold); R_C=$(ratio "$O_C" "$L_C")
    echo "| 1. first scan of (b), cold (caches dropped) | $(mbps "$MEDIA_BYTES" "$L_C") MB/s ($(fmt "$L_C") s, $(spread media-lomob-cold)) | openssl sha256 ×2: $(mbps "$MEDIA_BYTES" "$O_C") MB/s ($(fmt "$O_C") s, $(spread media-openssl-cold)) | lomob = $R_C× openssl | (info) |"
fi
echo "| 2. no-change rescan of (a), warm (median s, min–max) | $(fmt "$RS_L") s ($(spread rescan-lomob)) | find -printf: $(fmt "$RS_F") s ($(spread rescan-find)) | lomob = $RS_R× find | ≤ 2×: $(yes_no "$(awk -v r="$RS_R" 'BEGIN{print (r<=2)}')") |"
if [[ $RESTIC == 1 ]]; then
    RS_X=$(med rescan-restic)
    echo "| 2. no-change rescan of (a) vs restic | $(fmt "$RS_L") s | restic backup (no change): $(fmt "$RS_X") s ($(spread rescan-restic)) | lomob = $(ratio "$RS_L" "$RS_X")× restic | (info) |"
fi
if [[ $COLD == 1 ]]; then
    RS_LC=$(med rescan-lomob-cold); RS_FC=$(med rescan-find-cold)
    echo "| 2. no-change rescan of (a), cold (caches dropped) | $(fmt "$RS_LC") s ($(spread rescan-lomob-cold)) | find -printf: $(fmt "$RS_FC") s ($(spread rescan-find-cold)) | lomob = $(ratio "$RS_LC" "$RS_FC")× find | (info) |"
fi
echo "| 3. peak RSS, first scan of (a) (median; all runs) | $((SMALL_FIRST_RSS / 1024)) MB (KB: $SMALL_FIRST_RSS_ALL) | | | < 200 MB: $(yes_no "$((SMALL_FIRST_RSS < 200 * 1024))") |"
echo "| 3. peak RSS, no-change rescan of (a) | $((RESCAN_RSS / 1024)) MB (KB: $RESCAN_RSS_ALL) | | | < 200 MB: $(yes_no "$((RESCAN_RSS < 200 * 1024))") |"
echo "| (info) first scan of (a): lomob's elapsed_secs, median | $(fmt "$SMALL_FIRST_T") s, $(awk -v n="$SMALL_FILES" -v s="$SMALL_FIRST_T" 'BEGIN{printf "%.0f", n/s}') files/s | | | |"
} > "$TMP/table.md"

{
echo "## Scan benchmark"
echo
echo "Produced by \`scripts/bench-scan.sh\` (RUNS=$RUNS) on $(date -u '+%Y-%m-%d %H:%M UTC'), lomob $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')."
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(grep -m1 -o -w sha_ni /proc/cpuinfo || echo 'no sha_ni')), $(free -h | awk '/^Mem:/ {print $2}') RAM, work dir on $(df -P "$WORK" | awk 'NR==2 {print $1}') ($(df -hPT "$WORK" | awk 'NR==2 {print $2", "$3}'), $(if [[ $(cat /sys/block/"$(basename "$(df -P "$WORK" | awk 'NR==2 {print $1}')")"/queue/rotational 2>/dev/null || echo 0) == 1 ]]; then echo "reported as rotational (virtual disk)"; else echo "non-rotational"; fi)); $(openssl version | cut -d' ' -f1-2); $(restic version 2>/dev/null | cut -d' ' -f1-2 || true); $(hyperfine --version)."
echo
echo "Corpora: (a) $SMALL_FILES files of 1–4 KiB in $SMALL_DIRS folders, $((SMALL_BYTES / 1000000)) MB; (b) $PHOTOS photos of 1.5–3 MB and $VIDEOS videos of 20–40 MB in a YYYY/MM tree, $MEDIA_COUNT files, $((MEDIA_BYTES / 1000000)) MB; both incompressible (AES-CTR keystream). lomob runs with its default threads (-t = cores), a fresh database per first scan and \`--no-progress\`; openssl is \`xargs -0 -P 2 -n 100 openssl dgst -sha256\` over the sorted file list; find is \`find DIR -printf '%s %T@ %i %p\\n'\`. Warm: the corpus was read once before. Cold: \`sync; echo 3 > /proc/sys/vm/drop_caches\` before each run. Times are whole-process wall times from hyperfine (median of $RUNS, min–max in brackets)."
echo
echo "Noise: the machine is shared (another build may run alongside); load average was $LOAD_BEFORE before and $LOAD_AFTER after. lomob's own elapsed_secs: $(fmt "$MEDIA_INNER") s for the (b) first scan, $(fmt "$RESCAN_INNER") s for the (a) rescan (the rest of the process time is sled open, flush and close). Manifest size after scanning (a): $DB_SIZE."
echo
cat "$TMP/table.md"
} > "$TMP/section.md"

cat "$TMP/section.md"

if [[ $NO_WRITE != 1 ]]; then
    BM=$REPO/BENCHMARKS.md
    python3 "$REPO/scripts/bench-section.py" "$BM" "$TMP/section.md" bench-scan
    log "wrote the section to $BM"
fi

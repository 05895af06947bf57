#!/usr/bin/env bash
# ISO benchmark for lomob: building one image of the media corpus, against genisoimage and
# xorriso; producing the image into a hashing sink (the upload path); peak memory.
#
#   scripts/bench-iso.sh            reuse (or generate) the media corpus and measure
#
# Environment knobs (defaults in brackets):
#   BENCH_DIR  work dir shared with scripts/bench-scan.sh; the corpus is its media/ folder,
#              outputs and databases go to a run.XXXXXX folder in it, removed on exit
#              [/tmp/lomob-bench]
#   RUNS       measured runs per command; the median is reported [3]
#   PHOTOS, VIDEOS  corpus (b) shape, as in bench-scan.sh [1000, 30]
#   COLD       1: also measure with dropped page caches, 0: skip, auto: if root [auto]
#   LOMOB      lomob binary [target/release/lomob, built with cargo build --release]
#   SINK       hashing-sink binary [target/release/examples/iso_sink, built here]
#   NO_WRITE   1: print the section but leave BENCHMARKS.md alone [0]
#
# Needs: hyperfine, jq, GNU time, bsdtar, genisoimage, xorriso (apt-get install -y
# genisoimage xorriso libarchive-tools), and what bench-scan.sh needs to generate corpora.
#
# Fairness: lomob fsyncs the image before renaming it into place (pack::write_image_file),
# genisoimage and xorriso do not. The main rows therefore time "tool, then `sync FILE`" for
# the two tools, so all three have the image on disk when the clock stops; a row without
# that sync is given for information. Before every run the outputs are deleted and `sync`
# runs (not timed), so no run pays for the previous run's write-back.
set -euo pipefail
NAME=bench-iso
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_DIR:-/tmp/lomob-bench}
RUNS=${RUNS:-3}
PHOTOS=${PHOTOS:-1000}
VIDEOS=${VIDEOS:-30}
COLD=${COLD:-auto}
NO_WRITE=${NO_WRITE:-0}


case "${1:-}" in
    "") ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
esac

for tool in hyperfine jq bsdtar genisoimage xorriso python3 awk; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[[ -x /usr/bin/time ]] || die "GNU time is required (apt-get install -y time)"
if [[ $COLD == auto ]]; then
    if [[ $(id -u) == 0 && -w /proc/sys/vm/drop_caches ]]; then COLD=1; else COLD=0; fi
fi

if [[ -z ${LOMOB:-} || -z ${SINK:-} ]]; then
    log "building lomob and the iso_sink example (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet --bin lomob --example iso_sink)
fi
LOMOB=${LOMOB:-$REPO/target/release/lomob}
SINK=${SINK:-$REPO/target/release/examples/iso_sink}
[[ -x $LOMOB ]] || die "no lomob binary at $LOMOB"
[[ -x $SINK ]] || die "no iso_sink binary at $SINK"

# The media corpus of bench-scan.sh: reuse it when its stamp matches, else let bench-scan.sh
# generate it (--corpus-only stops before measuring anything).
MEDIA=$WORK/media
STAMP="media photos=$PHOTOS videos=$VIDEOS v1"
if [[ ! -f $MEDIA.stamp || $(cat "$MEDIA.stamp") != "$STAMP" ]]; then
    log "media corpus missing or different: generating it with bench-scan.sh"
    BENCH_DIR=$WORK PHOTOS=$PHOTOS VIDEOS=$VIDEOS LOMOB=$LOMOB "$REPO/scripts/bench-scan.sh" --corpus-only
fi
[[ -f $MEDIA.stamp && $(cat "$MEDIA.stamp") == "$STAMP" ]] || die "no media corpus in $MEDIA"

TMP=$(mktemp -d "$WORK/run.XXXXXX")
cleanup() { rm -rf -- "$TMP"; }
trap cleanup EXIT
export HOME=$TMP/home XDG_CONFIG_HOME=$TMP/home/.config XDG_DATA_HOME=$TMP/home/.local/share
export XDG_CACHE_HOME=$TMP/home/.cache
mkdir -p "$HOME"
unset LOMOB_DB LOMOB_CONFIG

MEDIA_BYTES=$(find "$MEDIA" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}')
MEDIA_COUNT=$(find "$MEDIA" -type f | wc -l)

# ---------------------------------------------------------------------------------------
# Helpers (as in bench-scan.sh).
DROP='sync; echo 3 > /proc/sys/vm/drop_caches'
hf() { # hf NAME PREPARE CMD: hyperfine RUNS runs, results in $TMP/NAME.json
    local name=$1 prep=$2 cmd=$3
    local args=(--runs "$RUNS" --style basic --export-json "$TMP/$name.json" --shell bash)
    [[ -n $prep ]] && args+=(--prepare "$prep")
    hyperfine "${args[@]}" "$cmd" >&2
}
mb_of() { mbps "$MEDIA_BYTES" "$(med "$1")"; }
cell() { echo "$(mb_of "$1") MB/s ($(fmt "$(med "$1")") s, $(spread "$1"))"; }

# A scanned manifest, copied before every lomob run so that each run packs everything.
log "scanning the corpus once (not timed)"
"$LOMOB" --db "$TMP/db-template" --no-progress scan "$MEDIA" > /dev/null
OUT=$TMP/out
DB=$TMP/db
RESET="rm -rf '$OUT' '$DB'; mkdir -p '$OUT'; cp -a '$TMP/db-template' '$DB'; sync"
LOMOB_CMD="'$LOMOB' --db '$DB' --no-progress iso create -s 5GB --out '$OUT' > /dev/null"
GEN_CMD="genisoimage -quiet -R -J -o '$OUT/gen.iso' '$MEDIA' && sync '$OUT/gen.iso'"
XOR_CMD="xorriso -as mkisofs -quiet -R -J -iso-level 3 -o '$OUT/xor.iso' '$MEDIA' 2>/dev/null && sync '$OUT/xor.iso'"
GEN_NOSYNC="genisoimage -quiet -R -J -o '$OUT/gen.iso' '$MEDIA'"
XOR_NOSYNC="xorriso -as mkisofs -quiet -R -J -iso-level 3 -o '$OUT/xor.iso' '$MEDIA' 2>/dev/null"
SINK_CMD="'$SINK' '$TMP/db-template' > /dev/null"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# 4 first: one output of each tool, checked with bsdtar (regular files and their bytes).
log "4. checking that each image lists the corpus"
count_iso() { # prints "files bytes" of regular files listed by bsdtar, catalog excluded
    bsdtar -tvf "$1" | awk '$1 ~ /^-/ && $NF !~ /CATALOG\.JSON$/ {n++; s+=$5} END {printf "%d %.0f\n", n, s}'
}
eval "$RESET"
eval "$LOMOB_CMD"
LOMOB_ISO=$(find "$OUT" -name '*.iso')
[[ $(echo "$LOMOB_ISO" | wc -l) == 1 ]] || die "lomob made more than one image: $LOMOB_ISO"
read -r L_N L_B < <(count_iso "$LOMOB_ISO")
L_SIZE=$(stat -c %s "$LOMOB_ISO")
L_CAT=$(bsdtar -tf "$LOMOB_ISO" | grep -c 'LOMOB/CATALOG.JSON$' || true)
eval "$RESET"
eval "$GEN_CMD"
read -r G_N G_B < <(count_iso "$OUT/gen.iso")
G_SIZE=$(stat -c %s "$OUT/gen.iso")
eval "$RESET"
eval "$XOR_CMD"
read -r X_N X_B < <(count_iso "$OUT/xor.iso")
X_SIZE=$(stat -c %s "$OUT/xor.iso")
eval "$RESET"
read -r S_SHA < <("$SINK" "$TMP/db-template" | jq -r .image_sha256)
[[ $L_N == "$MEDIA_COUNT" && $L_B == "$MEDIA_BYTES" ]] || die "lomob image lists $L_N files / $L_B bytes"
[[ $G_N == "$MEDIA_COUNT" && $G_B == "$MEDIA_BYTES" ]] || die "genisoimage image lists $G_N files / $G_B bytes"
[[ $X_N == "$MEDIA_COUNT" && $X_B == "$MEDIA_BYTES" ]] || die "xorriso image lists $X_N files / $X_B bytes"

# ---------------------------------------------------------------------------------------
# 1 and 2, warm.
log "1. image to a file, warm"
warm "$MEDIA"
hf lomob-warm "$RESET" "$LOMOB_CMD"
hf gen-warm "$RESET" "$GEN_CMD"
hf xor-warm "$RESET" "$XOR_CMD"
hf gen-nosync-warm "$RESET" "$GEN_NOSYNC"
hf xor-nosync-warm "$RESET" "$XOR_NOSYNC"
log "2. image into a hashing sink, warm"
eval "$RESET"
hf sink-warm "" "$SINK_CMD"
# The stream alone (plan and manifest open excluded) and the same with a null sink.
: > "$TMP/sink-inner.tsv"
for _ in $(seq "$RUNS"); do
    a=$("$SINK" "$TMP/db-template" | jq -r .stream_secs)
    b=$("$SINK" "$TMP/db-template" --sink null | jq -r .stream_secs)
    printf '%s\t%s\n' "$a" "$b" >> "$TMP/sink-inner.tsv"
done
SINK_STREAM=$(cut -f1 "$TMP/sink-inner.tsv" | median_of)
NULL_STREAM=$(cut -f2 "$TMP/sink-inner.tsv" | median_of)

# 3. Peak RSS of the file write (warm).
log "3. peak memory of lomob iso create"
: > "$TMP/rss.txt"
for _ in $(seq "$RUNS"); do
    eval "$RESET"
    /usr/bin/time -v -o "$TMP/time.txt" "$LOMOB" --db "$DB" --no-progress iso create -s 5GB --out "$OUT" > /dev/null
    awk -F': ' '/Maximum resident/ {print $2}' "$TMP/time.txt" >> "$TMP/rss.txt"
done
RSS=$(median_of < "$TMP/rss.txt")
RSS_ALL=$(paste -sd, - < "$TMP/rss.txt")
eval "$RESET"

# 1 and 2, cold.
if [[ $COLD == 1 ]]; then
    log "1. image to a file, cold (page cache dropped before every run)"
    hf lomob-cold "$RESET; $DROP" "$LOMOB_CMD"
    hf gen-cold "$RESET; $DROP" "$GEN_CMD"
    hf xor-cold "$RESET; $DROP" "$XOR_CMD"
    log "2. image into a hashing sink, cold"
    hf sink-cold "$RESET; $DROP" "$SINK_CMD"
fi
eval "$RESET"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# Report.
best_of() { awk -v a="$1" -v b="$2" 'BEGIN {print (a < b ? a : b)}'; }
L_W=$(med lomob-warm); BEST_W=$(best_of "$(med gen-warm)" "$(med xor-warm)")
{
echo "| measurement | lomob | genisoimage | xorriso | ratio | target |"
echo "| --- | --- | --- | --- | --- | --- |"
echo "| 1. image of (b) to a file, warm, fsynced (MB/s; median s, min–max) | $(cell lomob-warm) | $(cell gen-warm) | $(cell xor-warm) | lomob = $(ratio "$BEST_W" "$L_W")× the faster tool | ≥ 1×: $(yes_no "$(awk -v a="$L_W" -v b="$BEST_W" 'BEGIN{print (a<=b)}')") |"
if [[ $COLD == 1 ]]; then
    L_C=$(med lomob-cold); BEST_C=$(best_of "$(med gen-cold)" "$(med xor-cold)")
    echo "| 1. image of (b) to a file, cold, fsynced | $(cell lomob-cold) | $(cell gen-cold) | $(cell xor-cold) | lomob = $(ratio "$BEST_C" "$L_C")× the faster tool | ≥ 1×: $(yes_no "$(awk -v a="$L_C" -v b="$BEST_C" 'BEGIN{print (a<=b)}')") |"
fi
BEST_NS=$(best_of "$(med gen-nosync-warm)" "$(med xor-nosync-warm)")
echo "| (info) 1. warm, tools without the final \`sync FILE\` (lomob still fsyncs) | $(cell lomob-warm) | $(cell gen-nosync-warm) | $(cell xor-nosync-warm) | lomob = $(ratio "$BEST_NS" "$L_W")× the faster tool | |"
S_W=$(med sink-warm); X_W=$(med xor-warm)
echo "| 2. image of (b) into SHA-256 (iso_sink), warm, vs xorriso writing it (warm, fsynced) | $(cell sink-warm) | | $(cell xor-warm) | lomob = $(ratio "$X_W" "$S_W")× xorriso | ≥ 1.5×: $(yes_no "$(awk -v a="$S_W" -v b="$X_W" 'BEGIN{print (b/a>=1.5)}')") |"
if [[ $COLD == 1 ]]; then
    S_C=$(med sink-cold); X_C=$(med xor-cold)
    echo "| 2. same, cold | $(cell sink-cold) | | $(cell xor-cold) | lomob = $(ratio "$X_C" "$S_C")× xorriso | ≥ 1.5×: $(yes_no "$(awk -v a="$S_C" -v b="$X_C" 'BEGIN{print (b/a>=1.5)}')") |"
fi
echo "| (info) 2. stream only (manifest open and plan excluded), warm, median of $RUNS | SHA-256 sink $(mbps "$MEDIA_BYTES" "$SINK_STREAM") MB/s ($(fmt "$SINK_STREAM") s); null sink $(mbps "$MEDIA_BYTES" "$NULL_STREAM") MB/s ($(fmt "$NULL_STREAM") s) | | | | |"
echo "| 3. peak RSS of \`lomob iso create\` (median; all runs, KB) | $((RSS / 1024)) MB ($RSS_ALL) | | | | < 64 MB: $(yes_no "$((RSS < 64 * 1024))") |"
echo "| 4. bsdtar -tvf: regular files, bytes (image size) | $L_N, $L_B (+ LOMOB/CATALOG.JSON: $L_CAT) ($L_SIZE) | $G_N, $G_B ($G_SIZE) | $X_N, $X_B ($X_SIZE) | corpus: $MEDIA_COUNT files, $MEDIA_BYTES bytes | all equal: **met** |"
} > "$TMP/table.md"

{
echo "## ISO benchmark"
echo
echo "Produced by \`scripts/bench-iso.sh\` (RUNS=$RUNS) on $(date -u '+%Y-%m-%d %H:%M UTC'), lomob $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')."
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(grep -m1 -o -w sha_ni /proc/cpuinfo || echo 'no sha_ni')), $(free -h | awk '/^Mem:/ {print $2}') RAM, corpus and outputs on $(df -P "$WORK" | awk 'NR==2 {print $1}') ($(df -hPT "$WORK" | awk 'NR==2 {print $2", "$3}')); $(genisoimage --version 2>&1 | head -1); $(xorriso -version 2>/dev/null | head -1); $(bsdtar --version | cut -d' ' -f1-2); $(hyperfine --version)."
echo
echo "Corpus (b) of \`scripts/bench-scan.sh\`: $MEDIA_COUNT files ($PHOTOS photos of 1.5–3 MB, $VIDEOS videos of 20–40 MB, YYYY/MM tree), $((MEDIA_BYTES / 1000000)) MB, incompressible. MB/s = corpus bytes / whole-process wall time (hyperfine, median of $RUNS, min–max in brackets). Commands:"
echo
echo "- lomob: \`lomob --db DB --no-progress iso create -s 5GB --out OUT\` on a copy of a manifest made by one untimed \`lomob scan\` (one 3.1 GB image; lomob reads, checks each file's SHA-256, hashes the image and fsyncs it)."
echo "- genisoimage: \`genisoimage -quiet -R -J -o OUT/gen.iso MEDIA && sync OUT/gen.iso\`."
echo "- xorriso: \`xorriso -as mkisofs -quiet -R -J -iso-level 3 -o OUT/xor.iso MEDIA && sync OUT/xor.iso\`."
echo "- hashing sink: \`target/release/examples/iso_sink DB\` (\`examples/iso_sink.rs\`): plans the same image and streams it through \`ImageReader\` into SHA-256 in 4 MiB reads, the reading side of an image upload in \`lomob sync\`; nothing is written."
echo
echo "Before every run: outputs deleted, manifest copy restored, \`sync\` (untimed); cold runs also \`echo 3 > /proc/sys/vm/drop_caches\`. Outputs go to the same disk as the corpus. Noise: the machine is shared with another engineer's builds; load average was $LOAD_BEFORE before and $LOAD_AFTER after."
echo
cat "$TMP/table.md"
} > "$TMP/section.md"

cat "$TMP/section.md"

if [[ $NO_WRITE != 1 ]]; then
    BM=$REPO/BENCHMARKS.md
    python3 "$REPO/scripts/bench-section.py" "$BM" "$TMP/section.md" bench-iso
    log "wrote the section to $BM"
fi

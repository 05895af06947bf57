#!/usr/bin/env bash
# The main job at disk speed (#21): lomob's local-disk (`fs`) site against the references on
# the same files and the same disk, in the same run, medians of RUNS, warm cache and then
# cold (page cache dropped before each timed command, when this user may):
#   - archive: `lomob sync --site local --pack-now` after a scan (the image goes straight
#     into the fs archive)                      vs  `lomob iso create` of the same files + sync
#   - stage:   `lomob sync --site local` after a scan (one object per file on the fs stage)
#                                               vs  `cp -r` + sync
#   - backup:  `lomob backup --pack-now` on a local site (scan, stage nothing, archive)
#                                               vs  `restic backup` to a local repository
# Peak RSS of every lomob command from GNU time. With the test servers' environment
# (`scripts/services.sh start; source .test-services/env`), also what the read-back of an
# image costs on an SFTP and a WebDAV archive (loopback), once each.
#
#   scripts/bench-local.sh     measure and write the bench-local section of BENCHMARKS.md
#
# Knobs: BENCH_DIR [/tmp/lomob-bench] (the corpus is bench-scan's "media" tree, made when
# missing), RUNS [3], COLD [1 when /proc/sys/vm/drop_caches is writable], LOMOB
# [target/release/lomob, built here], NO_WRITE [0].
# Needs: GNU time, restic (apt-get install -y restic), about 3x the corpus free.
set -euo pipefail
NAME=bench-local
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_DIR:-/tmp/lomob-bench}
RUNS=${RUNS:-3}
if [[ -w /proc/sys/vm/drop_caches ]]; then COLD=${COLD:-1}; else COLD=0; fi
NO_WRITE=${NO_WRITE:-0}
for tool in restic /usr/bin/time; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if [[ -z ${LOMOB:-} ]]; then
    log "building lomob (cargo build --release)"
    (cd "$REPO" && cargo build --release --bin lomob -q)
    LOMOB=$REPO/target/release/lomob
fi
BENCH_DIR=$WORK "$REPO/scripts/bench-scan.sh" --corpus-only >/dev/null
MEDIA=$WORK/media
[[ -d $MEDIA ]] || die "no corpus at $MEDIA"
CORPUS_BYTES=$(du -sb "$MEDIA" | cut -f1)
CORPUS_FILES=$(find "$MEDIA" -type f | wc -l)
TMP=$(mktemp -d "$WORK/local.XXXXXX")
trap 'rm -rf -- "$TMP"' EXIT
export HOME=$TMP/home XDG_DATA_HOME=$TMP/home/.local/share XDG_CONFIG_HOME=$TMP/home/.config
export RESTIC_PASSWORD=lomob-bench
mkdir -p "$HOME"

# measure NAME CMD...: wall seconds and peak RSS (KB) into $TMP/res/NAME.{t,rss}
measure() {
    local name=$1
    shift
    sync
    if [[ ${CACHE:-warm} == cold ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
    /usr/bin/time -f '%e %M' -o "$TMP/res/$name.time" "$@" >"$TMP/res/$name.out" 2>"$TMP/res/$name.err" ||
        { tail "$TMP/res/$name.err" >&2; die "$name failed"; }
    read -r t rss <"$TMP/res/$name.time"
    echo "$t" >"$TMP/res/$name.t"
    echo "$rss" >"$TMP/res/$name.rss"
    log "  $name: $t s, peak RSS $((rss / 1024)) MB"
}

site() { # site DIR: a config with one local site under DIR
    mkdir -p "$1"
    cat >"$1/cfg.toml" <<EOF
[sites.local]
stage = { kind = "fs", root = "$1/stage" }
archive = { kind = "fs", root = "$1/archive" }
EOF
}
L() { local d=$1; shift; "$LOMOB" --config "$d/cfg.toml" --db "$d/db" --no-progress "$@"; }

mkdir -p "$TMP/res"
MODES=warm
[[ $COLD == 1 ]] && MODES="warm cold"
for CACHE in $MODES; do
warm "$MEDIA"
for r in $(seq "$RUNS"); do
    log "round $r ($CACHE cache)"
    d=$TMP/iso; rm -rf "$d"; site "$d"; L "$d" scan "$MEDIA" >/dev/null
    measure "$CACHE-iso-$r" bash -c "'$LOMOB' --config '$d/cfg.toml' --db '$d/db' --no-progress iso create --out '$d/out' >/dev/null && sync"
    rm -rf "$d"
    d=$TMP/arch; rm -rf "$d"; site "$d"; L "$d" scan "$MEDIA" >/dev/null
    measure "$CACHE-archive-$r" bash -c "'$LOMOB' --config '$d/cfg.toml' --db '$d/db' --no-progress sync --site local --pack-now >/dev/null && sync"
    rm -rf "$d"
    d=$TMP/cp; rm -rf "$d"; mkdir -p "$d"
    measure "$CACHE-cp-$r" bash -c "cp -r '$MEDIA' '$d/copy' && sync"
    rm -rf "$d"
    d=$TMP/stage; rm -rf "$d"; site "$d"; L "$d" scan "$MEDIA" >/dev/null
    measure "$CACHE-stage-$r" bash -c "'$LOMOB' --config '$d/cfg.toml' --db '$d/db' --no-progress sync --site local >/dev/null && sync"
    rm -rf "$d"
    d=$TMP/backup; rm -rf "$d"; site "$d"
    measure "$CACHE-backup-$r" bash -c "'$LOMOB' --config '$d/cfg.toml' --db '$d/db' --no-progress backup '$MEDIA' --pack-now >/dev/null && sync"
    rm -rf "$d"
    d=$TMP/restic; rm -rf "$d"; restic -r "$d" init >/dev/null
    measure "$CACHE-restic-$r" bash -c "restic -r '$d' backup --quiet '$MEDIA' && sync"
    rm -rf "$d"
done
done

# The read-back of an image on a network archive (SFTP, WebDAV on loopback): once each.
NET=0
if [[ -n ${LOMOB_TEST_SFTP_HOST:-} && -n ${LOMOB_TEST_WEBDAV_ENDPOINT:-} ]]; then
    NET=1
    d=$TMP/net; rm -rf "$d"; mkdir -p "$d"
    tag=bench-$$-$(date +%s)
    cat >"$d/cfg.toml" <<EOF
[sites.sftp]
stage = { kind = "fs", root = "$d/stage1" }
archive = { kind = "sftp", host = "$LOMOB_TEST_SFTP_HOST:$LOMOB_TEST_SFTP_PORT", user = "$LOMOB_TEST_SFTP_USER", key = "$LOMOB_TEST_SFTP_KEY", root = "$LOMOB_TEST_SFTP_ROOT/$tag", known-hosts = "accept" }
[sites.webdav]
stage = { kind = "fs", root = "$d/stage2" }
archive = { kind = "webdav", endpoint = "$LOMOB_TEST_WEBDAV_ENDPOINT", root = "/$tag" }
EOF
    L "$d" scan "$MEDIA" >/dev/null
    for s in sftp webdav; do
        CACHE=warm measure "net-$s" "$LOMOB" --config "$d/cfg.toml" --db "$d/db" --no-progress sync --site "$s" --pack-now
        grep -o 'read back and checked ([^)]*) in [0-9.]* s' "$TMP/res/net-$s.err" | awk '{print $(NF-1)}' >"$TMP/res/net-$s.rb"
        [[ -s $TMP/res/net-$s.rb ]] || die "no read-back line for $s"
    done
    rm -rf "$d"
fi

python3 - "$TMP/res" "$RUNS" "$MODES" "$NET" >"$TMP/table.md" <<'PY'
import os, statistics, sys
res, runs, modes, net = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4] == "1"
def vals(n, ext):
    return [float(open(os.path.join(res, f"{n}-{r}.{ext}")).read()) for r in range(1, runs + 1)]
def med(n):
    return statistics.median(vals(n, "t"))
def sp(n):
    v = vals(n, "t")
    return f"{statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})"
def rss(n):
    return max(vals(n, "rss")) / 1024
def met(c):
    return "**met**" if c else "**missed**"
print("| cache | step | lomob wall s, median (min–max) | reference | reference wall s | ratio | target | lomob peak RSS MB (target < 100) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for mode in modes:
    for step, ref, label, target in [
        ("archive", "iso", "`lomob iso create` + sync", 1.1),
        ("stage", "cp", "`cp -r` + sync", 1.1),
        ("backup", "restic", "`restic backup` to a local repository", 1 / 3),
    ]:
        s, f = f"{mode}-{step}", f"{mode}-{ref}"
        r = med(s) / med(f)
        # Cold, the issue asks each target to hold "with the ratio at least 0.8x": the warm
        # bound divided by 0.8; the warm bound itself is shown beside it.
        if mode == "warm":
            verdict = f"≤ {target:.2f}: {met(r <= target)}"
        else:
            cold = target / 0.8
            verdict = f"≤ {cold:.2f} ({target:.2f} ÷ 0.8): {met(r <= cold)}; warm bound {target:.2f}: {met(r <= target)}"
        print(f"| {mode} | {step} | {sp(s)} | {label} | {sp(f)} | {r:.2f} | {verdict} | {rss(s):.0f}: {met(rss(s) < 100)} |")
if net:
    print()
    print("Read-back of the image on a network archive (loopback servers started by `scripts/services.sh`; one run each, warm cache): the time of the whole `sync --site NAME --pack-now` after a scan, and of the read-back in it (from lomob's log line).")
    print()
    print("| archive | sync --pack-now wall s | read-back s | share of the sync | peak RSS MB |")
    print("| --- | --- | --- | --- | --- |")
    for s in ["sftp", "webdav"]:
        t = float(open(os.path.join(res, f"net-{s}.t")).read())
        rb = float(open(os.path.join(res, f"net-{s}.rb")).read())
        m = float(open(os.path.join(res, f"net-{s}.rss")).read()) / 1024
        print(f"| {s} | {t:.2f} | {rb:.2f} | {100 * rb / t:.0f} % | {m:.0f} |")
PY

LOMOB_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
{
echo "## Local-disk benchmark"
echo
echo "Produced by \`scripts/bench-local.sh\` (RUNS=$RUNS) on $(date -u '+%Y-%m-%d %H:%M UTC'), lomob $LOMOB_REV. Machine: $(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') RAM, corpus and sites on $(df -P "$WORK" | awk 'NR==2 {print $1}') ($(df -hPT "$WORK" | awk 'NR==2 {print $2}')); $(restic version | cut -d' ' -f1-2)."
echo
echo "Corpus: bench-scan's media tree, $CORPUS_FILES files, $CORPUS_BYTES bytes, read once before the warm runs; for the cold runs the page cache is dropped (\`echo 3 > /proc/sys/vm/drop_caches\`) right before each timed command, after its untimed scan. Every command ends with \`sync\`, so its writes are on the disk; each lomob step starts from a fresh manifest and site after a scan that is not timed (the backup row times the scan too). Commands: \`lomob sync --site local --pack-now\` (archive), \`lomob iso create --out DIR\`, \`lomob sync --site local\` (stage), \`cp -r\`, \`lomob backup DIR --pack-now\`, \`restic backup --quiet\` (after \`restic init\`, defaults)."
echo
cat "$TMP/table.md"
} >"$TMP/section.md"
cat "$TMP/section.md"
if [[ $NO_WRITE != 1 ]]; then
    python3 "$REPO/scripts/bench-section.py" "$REPO/BENCHMARKS.md" "$TMP/section.md" bench-local
    log "wrote the bench-local section of BENCHMARKS.md"
fi

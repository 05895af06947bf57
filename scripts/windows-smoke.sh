#!/usr/bin/env bash
# Windows smoke test of the real binary: builds lomob for x86_64-pc-windows-gnu (release) and
# runs it under wine on a library with Unicode, long and deep names. Called by scripts/test.sh.
#
# What it checks, every command's exit code being 0:
#   scan of the library (every file found), `backup --pack-now` on the embedded default site
#   (its stage and archive under %LOCALAPPDATA%\lomob), `iso list` (one image), `iso extract`
#   of the image (every file byte-identical to the library, every name unmangled), `list dirs`
#   (the Unicode folder names shown), and a second `backup` that finds nothing new and makes
#   no image; the receiver (`lomob serve`) paired with a sender, backed up to, restored from.
#
# PROFILE=dev for a faster build while working on this script.
#
# Needs (installed here when missing): the Rust target (rustup), mingw-w64 (links the .exe and
# builds the stand-in DLL below) and wine64, from Debian's packages.
#
# Debian's wine 8 lacks bcryptprimitives.dll, whose ProcessPrng Rust's std calls at start; a
# stand-in built here from scripts/windows/bcryptprimitives.c sits beside lomob.exe.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TARGET=x86_64-pc-windows-gnu

say() { echo "windows-smoke: $*"; }
fail() {
    echo "windows-smoke: FAILED: $*" >&2
    exit 1
}

rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
need=()
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64)
[ -x /usr/lib/wine/wine64 ] || need+=(wine64)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
WINE=/usr/lib/wine/wine64

# PROFILE=dev builds faster while working on the smoke test itself; CI uses release.
PROFILE=${PROFILE:-release}
OUT_DIR=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
say "building lomob.exe (cargo build --profile $PROFILE --target $TARGET)"
cargo build --quiet --profile "$PROFILE" --target "$TARGET" --bin lomob

WORK=$(mktemp -d /tmp/lomob-winsmoke.XXXXXX)
export WINEPREFIX=$WORK/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
cleanup() {
    # Only the wineserver of this prefix, which this script started.
    WINEPREFIX=$WORK/prefix /usr/lib/wine/wineserver -k >/dev/null 2>&1 || true
    rm -rf -- "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/bin"
cp "target/$TARGET/$OUT_DIR/lomob.exe" "$WORK/bin/"
x86_64-w64-mingw32-gcc -shared -O2 -Wall -o "$WORK/bin/bcryptprimitives.dll" \
    scripts/windows/bcryptprimitives.c -ladvapi32

# Linux paths as wine's Z: drive shows them.
winpath() { printf 'Z:%s' "${1//\//\\}"; }
lomob() {
    local out rc=0
    out=$("$WINE" "$WORK/bin/lomob.exe" --no-progress "$@" 2>"$WORK/stderr") || rc=$?
    if [ "$rc" != 0 ]; then
        cat "$WORK/stderr" >&2
        fail "lomob $* exited with $rc"
    fi
    printf '%s' "$out"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# The library: Unicode (accents, CJK, emoji), a 200-byte name, deep folders, an empty file.
LIB=$WORK/lib
long=$(printf 'long-%.0s' $(seq 39))x.jpg
mkdir -p "$LIB/été 2021/写真" "$LIB/🎉 party" "$LIB/a/b/c/d/e/f/g/h" "$LIB/Space Name"
head -c 300000 /dev/urandom >"$LIB/été 2021/写真/猫.heic"
head -c 70000 /dev/urandom >"$LIB/🎉 party/🎂 cake.mov"
head -c 5000 /dev/urandom >"$LIB/a/b/c/d/e/f/g/h/deep.jpg"
head -c 12345 /dev/urandom >"$LIB/Space Name/$long"
head -c 4096 /dev/urandom >"$LIB/Space Name/Ελληνικά ñ.png"
: >"$LIB/empty.txt"
FILES=$(find "$LIB" -type f | wc -l)

say "first run of wine (creates the prefix)"
lomob --version >/dev/null

WLIB=$(winpath "$LIB")
new=$(lomob scan "$WLIB" --json | json 'd["new"]')
[ "$new" = "$FILES" ] || fail "scan found $new new files, the library has $FILES"
say "scan: $new files"

# The backup's report: one entry per site (the embedded default has one, `local`).
lomob backup "$WLIB" --pack-now --json >"$WORK/backup1.json"
archived=$(json 'sum(s["archived_files"] for s in d)' <"$WORK/backup1.json")
# The empty file and the other contents: each distinct content once.
[ "$archived" = "$FILES" ] || fail "backup --pack-now archived $archived files, expected $FILES"
say "backup --pack-now: $archived files archived"

lomob iso list --json >"$WORK/isos.json"
count=$(json 'len(d)' <"$WORK/isos.json")
[ "$count" = 1 ] || fail "iso list shows $count images, expected 1"
name=$(json 'd[0]["name"]' <"$WORK/isos.json")
# The image file on the embedded default site: %LOCALAPPDATA%\lomob\local\archive.
image=$(find "$WINEPREFIX/drive_c/users" -path '*AppData/Local/lomob/local/archive/*' -name "$name" | head -1)
[ -n "$image" ] || fail "image $name not found under %LOCALAPPDATA%\\lomob\\local\\archive"
say "image $name: $(stat -c %s "$image") bytes"

lomob iso extract "$(winpath "$image")" --to "$(winpath "$WORK/out")" >/dev/null
# Inside the image a file lives at its absolute path without the drive's colon: Z/tmp/...
extracted=$WORK/out/Z$LIB
[ -d "$extracted" ] || fail "nothing extracted at $extracted: $(find "$WORK/out" -maxdepth 4 | head)"
diff -r "$LIB" "$extracted" || fail "the extracted tree differs from the library"
say "iso extract: $FILES files byte-identical, names unmangled"

dirs=$(lomob list dirs)
for d in "été 2021" "写真" "🎉 party" "Space Name"; do
    grep -qF "$d" <<<"$dirs" || fail "list dirs does not show $d: $dirs"
done
say "list dirs: Unicode names shown"

rescan=$(lomob scan "$WLIB" --json | json '(d["new"], d["changed"], d["unchanged"])')
[ "$rescan" = "(0, 0, $FILES)" ] || fail "a rescan found (new, changed, unchanged) = $rescan"
lomob backup "$WLIB" --json >"$WORK/backup2.json"
sent=$(json 'sum(s["staged_files"] + s["archived_files"] + len(s["images"]) for s in d)' <"$WORK/backup2.json")
[ "$sent" = 0 ] || fail "the second backup staged or archived something: $(cat "$WORK/backup2.json")"
count=$(lomob iso list --json | json 'len(d)')
[ "$count" = 1 ] || fail "the second backup made an image ($count images)"
say "second backup: nothing new"

# A rename in case only is the same file where names ignore case: its record moves, history
# and all, and nothing is taken as deleted or new.
mv "$LIB/a/b/c/d/e/f/g/h/deep.jpg" "$LIB/a/b/c/d/e/f/g/h/DEEP.JPG"
moved=$(lomob scan "$WLIB" --json | json '(d["new"], d["deleted"], d["renamed"], d["files_hashed"])')
[ "$moved" = "(0, 0, 1, 0)" ] || fail "a case-only rename was scanned as (new, deleted, renamed, hashed) = $moved"
say "case-only rename: recorded as a move"

# start_daemon LOG: starts the daemon in the background (its PID in $daemon) and waits until
# it answers `daemon status` on its named pipe (60 s at most; killed and failed otherwise).
start_daemon() {
    "$WINE" "$WORK/bin/lomob.exe" --no-progress daemon >"$1" 2>&1 &
    daemon=$!
    for _ in $(seq 120); do
        "$WINE" "$WORK/bin/lomob.exe" daemon status >/dev/null 2>&1 && return 0
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.5
    done
    kill "$daemon" 2>/dev/null || true
    cat "$1" >&2
    fail "the daemon did not answer on its named pipe within 60 s"
}
# wait_stopped LOG WHAT: waits 60 s at most for the daemon to exit, with code 0.
wait_stopped() {
    for _ in $(seq 120); do
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$daemon" 2>/dev/null; then
        kill "$daemon" 2>/dev/null || true
        tail -20 "$1" >&2
        fail "the daemon did not stop within 60 s of $2"
    fi
    wait "$daemon" || fail "the daemon exited with $? after $2: $(tail -5 "$1")"
}

# The daemon: reached over its named pipe by `daemon status` and by a forwarded `status`,
# sees a new file, stops on `daemon stop`.
start_daemon "$WORK/daemon.log"
"$WINE" "$WORK/bin/lomob.exe" --no-progress status >"$WORK/status.out" 2>"$WORK/status.err" ||
    fail "status through the daemon failed: $(cat "$WORK/status.err")"
grep -q "run by the lomob daemon" "$WORK/status.err" || fail "status was not run by the daemon: $(cat "$WORK/status.err")"
# notify's Windows backend (ReadDirectoryChangesW) sees a new file (settled after 30 s).
echo watched >"$LIB/a/new while watched.jpg"
seen=
for _ in $(seq 40); do
    n=$(lomob daemon status --json | json 'd["pending_changes"]')
    if [ "$n" -ge 1 ]; then
        seen=1
        break
    fi
    sleep 0.5
done
[ -n "$seen" ] || fail "the daemon's watcher did not see a new file within 20 s"
lomob daemon stop >/dev/null
wait_stopped "$WORK/daemon.log" "\`daemon stop\`"
say "daemon: answered on its named pipe, saw a new file, ran a forwarded status, stopped"

# Ctrl-C stops it too (wine turns SIGINT into the console's Ctrl-C event).
start_daemon "$WORK/daemon2.log"
kill -INT "$daemon"
wait_stopped "$WORK/daemon2.log" "Ctrl-C"
grep -q "Ctrl-C: stopping" "$WORK/daemon2.log" || fail "the daemon did not stop on Ctrl-C: $(tail -5 "$WORK/daemon2.log")"
say "daemon: stopped on Ctrl-C"

# The service: a Task Scheduler task in UTF-16, as `schtasks /XML` reads it, that runs this
# lomob.exe's daemon.
lomob service install >"$WORK/service.out"
task=$(find "$WINEPREFIX/drive_c/users" -path '*AppData/Local/lomob/lomob-daemon.xml' | head -1)
[ -n "$task" ] || fail "service install wrote no task: $(cat "$WORK/service.out")"
iconv -f UTF-16 -t UTF-8 "$task" >"$WORK/task.xml" || fail "the task is not UTF-16"
grep -q "lomob.exe</Command>" "$WORK/task.xml" || fail "the task does not run lomob.exe: $(cat "$WORK/task.xml")"
grep -q "<Arguments>.*daemon</Arguments>" "$WORK/task.xml" || fail "the task does not start the daemon"
grep -q "schtasks /Create /XML" "$WORK/service.out" || fail "service install does not say how to enable the task"
say "service install: Task Scheduler task written"

# The receiver (`lomob serve`): started, paired with a sender over HTTPS with its pinned
# certificate, backed up to and restored from, then installed as a Task Scheduler task.
RECV=$WORK/receiver
"$WINE" "$WORK/bin/lomob.exe" --no-progress serve --root "$(winpath "$RECV")" --listen 127.0.0.1:0 \
    >"$WORK/serve.out" 2>"$WORK/serve.err" &
serve_pid=$!
for _ in $(seq 120); do
    grep -q "listening on https://" "$WORK/serve.out" 2>/dev/null && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.5
done
grep -q "listening on https://" "$WORK/serve.out" || fail "the receiver did not start: $(cat "$WORK/serve.err")"
code=$(lomob serve --root "$(winpath "$RECV")" pair --name win --json | json 'd["code"]')
printf '[library]\nroots = ["%s"]\n' "${WLIB//\\/\\\\}" >"$WORK/peer.toml"
WPEER=$(winpath "$WORK/peer.toml")
lomob --config "$WPEER" site pair win "$code" --no-encryption >"$WORK/pair.out"
grep -q "certificate sha256:" "$WORK/pair.out" || fail "site pair did not pin the certificate: $(cat "$WORK/pair.out")"
lomob --config "$WPEER" --db "$(winpath "$WORK/peer.db")" backup --pack-now --json >"$WORK/peer-backup.json"
archived=$(json 'sum(s["archived_files"] for s in d)' <"$WORK/peer-backup.json")
[ "$archived" -ge 1 ] || fail "nothing was archived on the receiver: $(cat "$WORK/peer-backup.json")"
lomob --config "$WPEER" --db "$(winpath "$WORK/peer.db")" restore --site win --to "$(winpath "$WORK/peer-back")" >/dev/null
diff -r "$LIB" "$WORK/peer-back/Z$LIB" || fail "the files restored from the receiver differ from the library"
kill "$serve_pid" 2>/dev/null || true
wait "$serve_pid" 2>/dev/null || true
lomob service install --serve --serve-root "$(winpath "$RECV")" >"$WORK/serve-service.out"
stask=$(find "$WINEPREFIX/drive_c/users" -path '*AppData/Local/lomob/lomob-serve.xml' | head -1)
[ -n "$stask" ] || fail "service install --serve wrote no task: $(cat "$WORK/serve-service.out")"
iconv -f UTF-16 -t UTF-8 "$stask" | grep -q "<Arguments>.*serve --root" || fail "the task does not start the receiver"
say "serve: paired over pinned TLS, backed up and restored byte-identical, installed as a task"

# A profile with an sftp site is refused when loaded, saying what to use instead.
cat >"$WORK/sftp.toml" <<'TOML'
[sites.friend]
stage = { kind = "sftp", host = "nas.example", user = "me", root = "/srv/lomob/stage" }
archive = { kind = "fs", root = "C:/lomob/archive" }
TOML
rc=0
"$WINE" "$WORK/bin/lomob.exe" --config "$(winpath "$WORK/sftp.toml")" status >/dev/null 2>"$WORK/sftp.err" || rc=$?
[ "$rc" != 0 ] || fail "a profile with an sftp site was accepted on Windows"
grep -q "webdav" "$WORK/sftp.err" || fail "the sftp refusal does not name the alternatives: $(cat "$WORK/sftp.err")"
say "sftp site refused at load (exit $rc), alternatives named"
echo "windows-smoke: 1 passed, 0 failed"

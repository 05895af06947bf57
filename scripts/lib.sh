# Shell shared by the benchmark scripts: messages, hyperfine result readers and number
# formatting. Source it after setting NAME (the script's name in messages) and, for the
# hyperfine readers, TMP (where the results' JSON files are).
#
#   NAME=bench-scan; . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

log() { echo "${NAME:-bench}: $(date +%H:%M:%S) $*" >&2; }
die() { log "error: $*"; exit 1; }

# Reads every file under a folder, so the next measurement starts with a warm page cache.
warm() { find "$1" -type f -print0 | xargs -0 -n 500 cat > /dev/null; }

# hyperfine --export-json results, by the name they were written under in $TMP.
med() { jq -r '.results[0].median' "$TMP/$1.json"; }
spread() { jq -r '.results[0] | "\(.min*1000|round/1000)–\(.max*1000|round/1000)"' "$TMP/$1.json"; }

mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / 1e6 / s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
fmt() { awk -v s="$1" 'BEGIN {printf "%.3f", s}'; }
median_of() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
yes_no() { awk -v c="$1" 'BEGIN {print (c ? "**met**" : "**missed**")}'; }

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# enc_section SITE DIR: the `[sites.SITE.encryption]` section of an encrypted site (age, a
# primary and a recovery key, made in DIR with $LOMOB on first use).
enc_section() {
    local site=$1 dir=$2 p r
    if [[ ! -f $dir/primary.key ]]; then
        "$LOMOB" key generate -o "$dir/primary.key" >/dev/null
        "$LOMOB" key generate -o "$dir/recovery.key" >/dev/null
    fi
    p=$(awk '/public key:/ {print $4}' "$dir/primary.key")
    r=$(awk '/public key:/ {print $4}' "$dir/recovery.key")
    printf '\n[sites.%s.encryption]\nrecipients = ["%s", "%s"]\nidentity = { file = "%s" }\n' "$site" "$p" "$r" "$dir/primary.key"
}

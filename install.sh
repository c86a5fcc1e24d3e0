#!/bin/sh
# Install berth, a private container registry, as a hardened systemd service.
#
#   curl -fsSL https://github.com/berth-registry/berth/releases/latest/download/install.sh \
#     | sh -s -- --domain registry.example.com --email ops@example.com
#
# Run as root. Downloads the release binary for this machine, checks its SHA-256 against the
# release's SHA256SUMS before anything on the machine changes, creates the `berth` system
# user, /etc/berth/berth.toml, the data directory and the systemd unit, starts berth and waits
# until it answers. Run it again to upgrade in place (configuration and data are kept);
# `--uninstall` removes the service and the binary (the data stays unless `--purge`).
set -eu

# Everything is inside main, called on the last line: a download cut short runs nothing.
main() {
RELEASES=https://github.com/berth-registry/berth/releases
BIN=/usr/local/bin/berth
CONF_DIR=/etc/berth
CONF=$CONF_DIR/berth.toml
UNIT=/etc/systemd/system/berth.service
METRICS=127.0.0.1:9464

DOMAIN=
EMAIL=
HTTP=0
VERSION=latest
DATA_DIR=/var/lib/berth
LISTEN=
BASE_URL=${BERTH_RELEASE_URL:-}
ACME_DIRECTORY=
ACME_CA_FILE=
UNINSTALL=0
PURGE=0

die() {
    printf 'berth install: %s\n' "$*" >&2
    exit 1
}
warn() { printf 'berth install: warning: %s\n' "$*" >&2; }
say() { printf '%s\n' "$*"; }

usage() {
    cat <<'EOF'
Usage: install.sh [options]

  --domain D --email E   HTTPS with a Let's Encrypt certificate for D (berth obtains and
                         renews it; ports 80 and 443 must reach this machine)
  --http                 plain HTTP instead (behind a proxy, or to try berth), on --listen
  --listen ADDR          the main listener (default 0.0.0.0:443 with HTTPS, 0.0.0.0:5000 with --http)
  --data-dir DIR         where images and the database live (default /var/lib/berth)
  --version V            the release to install (default: the latest)
  --base-url URL         where releases are downloaded from: URL/VERSION/FILE
                         (also BERTH_RELEASE_URL; default: the project's GitHub releases)
  --acme-directory URL   another ACME CA than Let's Encrypt (a private CA, or a test one)
  --acme-ca-file FILE    the CA certificate that ACME directory is served with
  --uninstall            remove the service and the binary; keep configuration and data
  --purge                with --uninstall: also remove the data, /etc/berth and the user

BERTH_ADMIN_PASSWORD in the environment sets the password of the first administrator
(`admin`); otherwise one is generated and printed at the end.
EOF
}

need_arg() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
}

while [ "$#" -gt 0 ]; do
    case "$1" in
    --domain) need_arg "$@"; DOMAIN=$2; shift 2 ;;
    --email) need_arg "$@"; EMAIL=$2; shift 2 ;;
    --http) HTTP=1; shift ;;
    --listen) need_arg "$@"; LISTEN=$2; shift 2 ;;
    --data-dir) need_arg "$@"; DATA_DIR=$2; shift 2 ;;
    --version) need_arg "$@"; VERSION=$2; shift 2 ;;
    --base-url) need_arg "$@"; BASE_URL=$2; shift 2 ;;
    --acme-directory) need_arg "$@"; ACME_DIRECTORY=$2; shift 2 ;;
    --acme-ca-file) need_arg "$@"; ACME_CA_FILE=$2; shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run this as root (… | sudo sh -s -- …)"
[ -d /run/systemd/system ] || die "systemd is not running here; install.sh sets berth up as a systemd service (run the binary by hand on other systems)"
command -v systemctl >/dev/null 2>&1 || die "systemctl not found"
case "$DATA_DIR" in
/*) ;;
*) die "--data-dir must be an absolute path: $DATA_DIR" ;;
esac
[ "$DATA_DIR" != / ] || die "--data-dir must not be /"
# What goes into the configuration and the unit: no quotes, spaces or other surprises.
for v in "$DATA_DIR" "$DOMAIN" "$EMAIL" "$LISTEN" "$ACME_DIRECTORY" "$ACME_CA_FILE"; do
    case "$v" in
    *[!A-Za-z0-9._/:@+=-]*) die "unexpected characters in \"$v\": letters, digits and . _ / : @ + = - only" ;;
    esac
done

# A key of the configuration in force (as `berth config show` prints it), read with the
# binary $2; empty when there is none.
configured() { # KEY BIN
    [ -x "$2" ] && [ -f "$CONF" ] || return 0
    "$2" --config "$CONF" config show 2>/dev/null | awk -v key="$1" '
        /^\[/ { section = substr($0, 2, length($0) - 2); next }
        {
            split(key, k, ".")
            want = (k[2] == "") ? "" : k[1]
            name = (k[2] == "") ? k[1] : k[2]
            if (section == want && $1 == name && $2 == "=") {
                v = $0; sub(/^[^=]*= */, "", v); gsub(/^"|"$/, "", v); print v; exit
            }
        }'
}

# ---------------------------------------------------------------------------------------------
# Uninstall.
if [ "$UNINSTALL" = 1 ]; then
    data=$(configured data_dir "$BIN")
    data=${data:-$DATA_DIR}
    if [ -f "$UNIT" ]; then
        systemctl disable --now berth.service >/dev/null 2>&1 || true
        rm -f "$UNIT"
        systemctl daemon-reload
    fi
    rm -f "$BIN"
    say "berth: service and binary removed."
    if [ "$PURGE" = 1 ]; then
        case "$data" in
        / | /bin | /boot | /dev | /etc | /home | /lib* | /proc | /root | /run | /sbin | /sys | /tmp | /usr | /usr/* | /var | /var/lib) die "refusing to remove $data" ;;
        /*) ;;
        *) die "the data directory $data is not an absolute path; remove it by hand" ;;
        esac
        if [ -d "$data" ] && [ ! -e "$data/berth.db" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
            die "$data holds no berth.db: not removed (remove it by hand if it is berth's)"
        fi
        rm -rf "$data" "$CONF_DIR"
        if getent passwd berth >/dev/null 2>&1; then userdel berth 2>/dev/null || true; fi
        say "berth: data, configuration and the berth user removed."
    else
        say "berth: kept the data ($data) and the configuration ($CONF_DIR); --uninstall --purge removes them."
    fi
    exit 0
fi
[ "$PURGE" = 0 ] || die "--purge goes with --uninstall"

case "$(uname -m)" in
x86_64 | amd64) ARCH=x86_64 ;;
aarch64 | arm64) ARCH=aarch64 ;;
*) die "unsupported architecture $(uname -m): releases are built for x86_64 and aarch64" ;;
esac
ARTIFACT=berth-$ARCH-linux

FIRST=1
[ -f "$CONF" ] && FIRST=0
if [ "$FIRST" = 1 ]; then
    if [ "$HTTP" = 1 ]; then
        [ -z "$DOMAIN" ] || die "--http and --domain do not go together (--domain means HTTPS)"
        LISTEN=${LISTEN:-0.0.0.0:5000}
    else
        if [ -z "$DOMAIN" ] || [ -z "$EMAIL" ]; then
            die "give --domain D --email E for HTTPS with Let's Encrypt, or --http for plain HTTP"
        fi
        LISTEN=${LISTEN:-0.0.0.0:443}
    fi
elif [ -n "$DOMAIN$EMAIL$LISTEN" ] || [ "$HTTP" = 1 ]; then
    warn "$CONF exists: it is kept as it is, and --domain, --email, --http and --listen are not applied (edit it to change them)"
fi

fetch() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    else
        die "neither curl nor wget is installed"
    fi
}

url_of() { # FILE
    if [ -n "$BASE_URL" ]; then
        printf '%s/%s/%s' "${BASE_URL%/}" "$VERSION" "$1"
    elif [ "$VERSION" = latest ]; then
        printf '%s/latest/download/%s' "$RELEASES" "$1"
    else
        printf '%s/download/v%s/%s' "$RELEASES" "${VERSION#v}" "$1"
    fi
}

port_of() { printf '%s' "${1##*:}"; }

# Which process listens on TCP port $1 (empty: none, or berth itself).
port_taker() {
    command -v ss >/dev/null 2>&1 || return 0
    ss -Htlnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\("[^"]*"\),pid=\([0-9]*\).*/\1 (pid \2)/p' \
        | grep -v '^"berth"' | head -n 1
}

check_port() {
    taker=$(port_taker "$1")
    [ -z "$taker" ] || die "port $1 is taken by $taker: stop it first, or put berth behind it with --http --listen 127.0.0.1:5000"
}

METRICS_OFF=0
if [ "$FIRST" = 1 ]; then
    check_port "$(port_of "$LISTEN")"
    if [ -n "$(port_taker "$(port_of "$METRICS")")" ]; then
        warn "port $(port_of "$METRICS") is taken ($(port_taker "$(port_of "$METRICS")")): berth's metrics listener is turned off (set metrics.listen in $CONF)"
        METRICS_OFF=1
    fi
    if [ "$HTTP" = 0 ]; then
        check_port 80
        # DNS is only warned about: it may be set up after, or point at a load balancer.
        resolved=$(getent ahostsv4 "$DOMAIN" 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' ')
        mine=$(hostname -I 2>/dev/null || true)
        if [ -z "$resolved" ]; then
            warn "$DOMAIN does not resolve yet: create an A record pointing at this machine; the certificate is obtained once it does"
        else
            here=0
            for a in $resolved; do
                case " $mine " in *" $a "*) here=1 ;; esac
            done
            [ "$here" = 1 ] || warn "$DOMAIN resolves to ${resolved% }, which is not an address of this machine (${mine% }); fine behind NAT or a floating IP, otherwise fix DNS before the certificate can be issued"
        fi
    fi
fi

# ---------------------------------------------------------------------------------------------
# Download and verify: nothing on the machine changes before this succeeds.
TMP=$(mktemp -d)
# The admin password file is only for the first start: never left behind.
trap 'rm -rf "$TMP"; rm -f "$CONF_DIR/admin-password"' EXIT
trap 'exit 130' INT TERM
fetch "$(url_of "$ARTIFACT")" "$TMP/berth" || die "cannot download $(url_of "$ARTIFACT")"
fetch "$(url_of SHA256SUMS)" "$TMP/SHA256SUMS" || die "cannot download $(url_of SHA256SUMS)"
want=$(awk -v f="$ARTIFACT" '$2 == f || $2 == "*" f { print $1 }' "$TMP/SHA256SUMS")
[ -n "$want" ] || die "SHA256SUMS has no line for $ARTIFACT; nothing was installed"
got=$(sha256sum "$TMP/berth" | cut -d ' ' -f 1)
[ "$got" = "$want" ] || die "checksum mismatch for $ARTIFACT (expected $want, got $got); nothing was installed"
chmod 0755 "$TMP/berth"
new_version=$("$TMP/berth" --version 2>&1) || die "the downloaded binary does not run on this machine: $new_version"
old_version=$("$BIN" --version 2>/dev/null || true)

# ---------------------------------------------------------------------------------------------
# Install.
umask 022
cp "$TMP/berth" "$BIN.new"
mv -f "$BIN.new" "$BIN"

if ! getent passwd berth >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
        --shell /usr/sbin/nologin berth
fi

mkdir -p "$CONF_DIR"
if [ "$FIRST" = 1 ]; then
    {
        printf '# Written by install.sh; see https://github.com/berth-registry/berth#configuration\n'
        printf 'data_dir = "%s"\n' "$DATA_DIR"
        printf 'listen = "%s"\n' "$LISTEN"
        if [ -n "${BERTH_ADMIN_PASSWORD:-}" ]; then
            printf 'admin_password_file = "%s/admin-password"\n' "$CONF_DIR"
        fi
        if [ "$HTTP" = 0 ]; then
            printf '\n[tls]\nmode = "acme"\ndomains = ["%s"]\nemail = "%s"\n' "$DOMAIN" "$EMAIL"
            [ -z "$ACME_DIRECTORY" ] || printf 'directory = "%s"\n' "$ACME_DIRECTORY"
            [ -z "$ACME_CA_FILE" ] || printf 'directory_ca_file = "%s"\n' "$ACME_CA_FILE"
        fi
        if [ "$METRICS_OFF" = 1 ]; then
            printf '\n[metrics]\nlisten = "off"\n'
        fi
    } >"$CONF.new"
    chown root:berth "$CONF.new"
    chmod 0640 "$CONF.new"
    mv -f "$CONF.new" "$CONF"
    if [ -n "${BERTH_ADMIN_PASSWORD:-}" ]; then
        (umask 027 && printf '%s\n' "$BERTH_ADMIN_PASSWORD" >"$CONF_DIR/admin-password")
        chown root:berth "$CONF_DIR/admin-password"
    fi
fi
DATA_DIR=$(configured data_dir "$BIN")
case "$DATA_DIR" in
/*) ;;
*) die "data_dir in $CONF must be an absolute path (it is \"$DATA_DIR\")" ;;
esac
METRICS_LISTEN=$(configured metrics.listen "$BIN")

# The default data directory is systemd's StateDirectory; another one is made here.
if [ "$DATA_DIR" = /var/lib/berth ]; then
    paths="StateDirectory=berth
StateDirectoryMode=0700"
else
    mkdir -p "$DATA_DIR"
    chown berth:berth "$DATA_DIR"
    chmod 0700 "$DATA_DIR"
    paths="ReadWritePaths=$DATA_DIR"
fi

cat >"$UNIT.new" <<EOF
# Written by install.sh (re-running it rewrites this file).
[Unit]
Description=berth container registry
Documentation=https://github.com/berth-registry/berth
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=$BIN serve --config $CONF
User=berth
Group=berth
$paths
UMask=0077
Restart=on-failure
RestartSec=2
TimeoutStartSec=300
TimeoutStopSec=60
LimitNOFILE=65536

# Only what a registry needs: binding ports 80 and 443, files in its data directory.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
PrivateIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
EOF
mv -f "$UNIT.new" "$UNIT"
systemctl daemon-reload

# Type=notify: these return once berth serves (or has failed).
if [ "$FIRST" = 1 ]; then
    systemctl enable --now berth.service >/dev/null 2>&1 ||
        die "berth did not start; see: journalctl -u berth --no-pager -n 50"
else
    systemctl enable berth.service >/dev/null 2>&1 || true
    systemctl restart berth.service ||
        die "berth did not start after the upgrade; see: journalctl -u berth --no-pager -n 50"
fi

# Type=notify said it serves; where there is a metrics listener, ask it too.
systemctl is-active --quiet berth.service ||
    die "berth is not running; see: journalctl -u berth --no-pager -n 50"
case "$METRICS_LISTEN" in
off | "") ;;
*)
    i=0
    until curl -fsS --max-time 5 --noproxy '*' -o /dev/null "http://$METRICS_LISTEN/healthz" 2>/dev/null ||
        wget -q -T 5 --no-proxy -O /dev/null "http://$METRICS_LISTEN/healthz" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -lt 30 ] || die "berth does not answer on http://$METRICS_LISTEN/healthz; see: journalctl -u berth --no-pager -n 50"
        sleep 1
    done
    ;;
esac
rm -f "$CONF_DIR/admin-password"

# ---------------------------------------------------------------------------------------------
# Tell what happened and what is next.
if [ -z "$old_version" ]; then
    say "Installed $new_version."
elif [ "$old_version" = "$new_version" ]; then
    say "Reinstalled $new_version (the same version); configuration and data kept."
else
    say "Upgraded $old_version -> $new_version; configuration and data kept."
fi

domain=$("$BIN" --config "$CONF" config show 2>/dev/null | sed -n 's/^domains = \["\([^"]*\)".*/\1/p')
listen=$(configured listen "$BIN")
if [ -n "$domain" ]; then
    port=$(port_of "$listen")
    url=https://$domain
    [ "$port" = 443 ] || url=$url:$port
    host=${url#https://}
else
    host=$(hostname -I 2>/dev/null | awk '{print $1}'):$(port_of "$listen")
    url=http://$host
fi

# Commands on the data directory run as its owner (files a root process made there would
# lock the service out).
AS_BERTH="runuser -u berth -- berth --config $CONF"
say ""
say "  registry:  $url"
say "  web UI:    $url/   (sign in with a user's password)"
if [ "$FIRST" = 1 ]; then
    say "  user:      admin"
    if [ -n "${BERTH_ADMIN_PASSWORD:-}" ]; then
        say "  password:  (the one given in BERTH_ADMIN_PASSWORD)"
    elif [ -f "$DATA_DIR/initial-admin-password" ]; then
        say "  password:  $(cat "$DATA_DIR/initial-admin-password")"
        say "             (also in $DATA_DIR/initial-admin-password; change it with: $AS_BERTH user passwd admin)"
    fi
fi
say ""
say "Next:"
if [ -n "$domain" ]; then
    say "  - DNS: an A (and AAAA) record for $domain pointing at this machine"
    say "  - open TCP ports 80 and 443 (80 answers ACME checks and redirects to HTTPS)"
    say "  - $AS_BERTH tls status      (the certificate, once obtained)"
else
    say "  - open TCP port $(port_of "$listen"), or put an HTTPS proxy in front (see the README, \"Behind a proxy\");"
    say "    clients need \"$host\" in their insecure registries for plain HTTP"
fi
say "  - docker login $host -u admin"
say "  - a token for CI:  $AS_BERTH token create --user admin --name ci --scope 'team/**:pull,push'"
case "$METRICS_LISTEN" in
off | "") ;;
*) say "  - health and metrics: curl http://$METRICS_LISTEN/readyz   (Prometheus: http://$METRICS_LISTEN/metrics)" ;;
esac
say "  - logs: journalctl -u berth -f"
}

main "$@"

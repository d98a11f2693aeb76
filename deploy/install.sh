#!/usr/bin/env bash
# Installs weft as a systemd service: the binary, the unit, the operator's
# guide, /etc/weft and /var/lib/weft (mode 0700) and the system user weft.
# Safe to run again: it replaces the binary, the unit and the guide, and
# leaves keys, configuration and state alone. See docs/operations.md.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: install.sh [--binary PATH] [--prefix DIR] [--destdir DIR] [--no-user]
       install.sh --adopt [--destdir DIR] [--no-user]

Installs weft: the binary to PREFIX/bin/weft, the systemd unit to
/etc/systemd/system/weft.service, the operator's guide to
PREFIX/share/doc/weft/operations.md, and creates /etc/weft and /var/lib/weft
(mode 0700) and the system user weft the service runs as.

  --binary PATH   install this weft binary; without it, when run from a
                  source checkout, builds one with `cargo build --release`
  --prefix DIR    installation prefix (default /usr/local)
  --destdir DIR   stage every file under DIR instead of / (also: DESTDIR=DIR);
                  no user is created and systemd is not told
  --no-user       do not create the user weft or change file owners
  --adopt         after `weft init` or `weft join --dir /etc/weft`: move the
                  store to /var/lib/weft/state, point the admin socket at
                  /run/weft/weft.sock (where the service keeps them) and give
                  the files to the user weft
  -h, --help      print this help
EOF
}

PREFIX=/usr/local
DESTDIR=${DESTDIR:-}
BINARY=
ADOPT=0
MAKE_USER=1
SERVICE_USER=weft

while [ $# -gt 0 ]; do
    case "$1" in
    --binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
    --binary=*) BINARY=${1#*=}; shift ;;
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --destdir) DESTDIR=${2:?--destdir needs a directory}; shift 2 ;;
    --destdir=*) DESTDIR=${1#*=}; shift ;;
    --no-user) MAKE_USER=0; shift ;;
    --adopt) ADOPT=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$PREFIX" in
/*) ;;
*) echo "install.sh: --prefix must be an absolute path, got $PREFIX" >&2; exit 2 ;;
esac
DESTDIR=${DESTDIR%/}
if [ -n "$DESTDIR" ]; then
    # A staged install: files only, nothing that changes the running system.
    MAKE_USER=0
fi

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(dirname "$SCRIPT_DIR")
CONF_DIR=/etc/weft
STATE_DIR=/var/lib/weft
RUNTIME_DIR=/run/weft

say() { printf 'weft install: %s\n' "$*"; }

# Creates directory $1 (under DESTDIR) with mode $2; an existing one keeps its
# contents and gets the mode.
make_dir() {
    install -d -m "$2" "$DESTDIR$1"
    chmod "$2" "$DESTDIR$1"
}

give_to_service_user() {
    if [ "$MAKE_USER" = 1 ]; then
        chown -R "$SERVICE_USER:$SERVICE_USER" "$@"
    fi
}

ensure_user() {
    if [ "$MAKE_USER" = 1 ] && ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir "$STATE_DIR" \
            --shell /usr/sbin/nologin --comment "weft mesh VPN node" "$SERVICE_USER"
        say "created system user $SERVICE_USER"
    fi
}

# Sets `key = "value"` in the config file $1 wherever the key is (admin_socket
# sits in [interface] or, in older files, in [mesh]); a missing key is added
# to the [mesh] table.
set_key() {
    local file=$1 key=$2 value=$3
    if grep -q "^${key}[[:space:]]*=" "$file"; then
        sed -i "s|^${key}[[:space:]]*=.*|${key} = \"$value\"|" "$file"
    else
        sed -i "/^\[mesh\][[:space:]]*$/a $key = \"$value\"" "$file"
    fi
}

adopt() {
    local conf=$DESTDIR$CONF_DIR/weft.toml
    if [ ! -f "$conf" ]; then
        echo "install.sh: $conf does not exist; run \`weft init\` or \`weft join\` with --dir $CONF_DIR first" >&2
        exit 1
    fi
    if ! grep -q '^\[mesh\]' "$conf"; then
        echo "install.sh: $conf has no [mesh] table; a static-peer config needs no adopting" >&2
        exit 1
    fi
    ensure_user
    make_dir "$STATE_DIR" 0700
    local current
    current=$(sed -n 's/^state[[:space:]]*=[[:space:]]*"\(.*\)"[[:space:]]*$/\1/p' "$conf")
    case "$current" in
    "")
        echo "install.sh: $conf has no state = \"...\" line in [mesh]; is it a file weft wrote?" >&2
        exit 1
        ;;
    "$STATE_DIR/state") say "store already in $STATE_DIR/state" ;;
    /*)
        echo "install.sh: $conf keeps its store at $current; move it to $STATE_DIR/state by hand, or leave it" >&2
        exit 1
        ;;
    *)
        if [ -e "$DESTDIR$STATE_DIR/state" ]; then
            echo "install.sh: $DESTDIR$STATE_DIR/state already exists; refusing to overwrite a store" >&2
            exit 1
        fi
        if [ -d "$DESTDIR$CONF_DIR/$current" ]; then
            mv "$DESTDIR$CONF_DIR/$current" "$DESTDIR$STATE_DIR/state"
            say "moved the store $CONF_DIR/$current to $STATE_DIR/state"
        fi
        set_key "$conf" state "$STATE_DIR/state"
        ;;
    esac
    set_key "$conf" admin_socket "$RUNTIME_DIR/weft.sock"
    chmod 0700 "$DESTDIR$CONF_DIR"
    give_to_service_user "$DESTDIR$CONF_DIR" "$DESTDIR$STATE_DIR"
    say "$CONF_DIR/weft.toml now uses state = \"$STATE_DIR/state\" and admin_socket = \"$RUNTIME_DIR/weft.sock\""
    cat <<EOF

Start the node:
  systemctl enable --now weft
  journalctl -u weft -f
  weft status
EOF
}

find_binary() {
    if [ -n "$BINARY" ]; then
        if [ ! -f "$BINARY" ]; then
            echo "install.sh: $BINARY is not a file" >&2
            exit 1
        fi
        return
    fi
    if [ -f "$CHECKOUT/Cargo.toml" ] && [ -d "$CHECKOUT/node" ]; then
        say "building weft from $CHECKOUT (cargo build --release -p weft-node)"
        (cd "$CHECKOUT" && cargo build --release --locked -p weft-node)
        BINARY=$CHECKOUT/target/release/weft
        return
    fi
    echo "install.sh: not in a weft checkout; give the binary with --binary PATH" >&2
    exit 1
}

install_files() {
    find_binary
    local bindir=$PREFIX/bin docdir=$PREFIX/share/doc/weft
    install -d -m 0755 "$DESTDIR$bindir" "$DESTDIR$docdir" "$DESTDIR/etc/systemd/system"
    # Copy, then rename: a running weft keeps its old file until it restarts.
    install -m 0755 "$BINARY" "$DESTDIR$bindir/.weft.new"
    mv -f "$DESTDIR$bindir/.weft.new" "$DESTDIR$bindir/weft"
    say "installed $bindir/weft"

    sed -e "s|/usr/local/bin/weft|$bindir/weft|g" \
        -e "s|/usr/local/share/doc/weft|$docdir|g" \
        "$SCRIPT_DIR/systemd/weft.service" >"$DESTDIR/etc/systemd/system/.weft.service.new"
    chmod 0644 "$DESTDIR/etc/systemd/system/.weft.service.new"
    mv -f "$DESTDIR/etc/systemd/system/.weft.service.new" "$DESTDIR/etc/systemd/system/weft.service"
    say "installed /etc/systemd/system/weft.service"

    if [ -f "$CHECKOUT/docs/operations.md" ]; then
        install -m 0644 "$CHECKOUT/docs/operations.md" "$DESTDIR$docdir/operations.md"
        say "installed $docdir/operations.md"
    fi

    ensure_user
    # /etc/weft stays empty here: `weft init` and `weft join` refuse a
    # directory with anything in it.
    make_dir "$CONF_DIR" 0700
    make_dir "$STATE_DIR" 0700
    if [ "$MAKE_USER" = 1 ]; then
        chown "$SERVICE_USER:$SERVICE_USER" "$DESTDIR$STATE_DIR"
    fi

    if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        say "systemd reloaded"
    fi

    local self=$0
    cat <<EOF

Next steps (as root):
  A new network, on its first server:
    $bindir/weft init --name NAME --network 100.64.0.0/16 --dir $CONF_DIR
  Or join an existing one with a token from \`weft invite --name NAME\` on an authority holder:
    $bindir/weft join 'TOKEN' --dir $CONF_DIR
  Then hand the files to the service and start it:
    $self --adopt
    systemctl enable --now weft
  Upgrading: run this script again with the new binary, then \`systemctl restart weft\`.
  Guide: $docdir/operations.md
EOF
}

if [ "$ADOPT" = 1 ]; then
    adopt
else
    install_files
fi

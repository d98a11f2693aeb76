# shellcheck shell=bash
# Helpers shared by tests/demo.sh and tests/bench/throughput.sh (sourced, not run): two
# network namespaces on one veth link, keys and configs for a weft node in each, starting the
# nodes, and removing everything again on exit, whatever happened. Underlay addresses are
# 192.0.2.1 and 192.0.2.2, overlay 100.64.0.1-2 and fd00:77::1-2; no traffic leaves the
# namespaces made here.

LAB_A=""    # namespace names, set by lab_pair
LAB_B=""
LAB_DIR=""  # temp dir: keys, configs, logs
LAB_PIDS=() # processes started in the namespaces
LAB_NS=()   # namespaces made

say() { printf '\n==> %s\n' "$*"; }

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "$0: must run as root (network namespaces, TUN devices)" >&2
        exit 1
    fi
}

# ensure_tools CMD:PACKAGE... installs the packages whose command is missing.
ensure_tools() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

lab_cleanup() {
    local rc=$? pid ns
    for pid in "${LAB_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${LAB_PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((rc != 0)) && [[ -n $LAB_DIR ]]; then
        for log in "$LAB_DIR"/*.log; do
            [[ -e $log ]] || continue
            echo "----- last lines of $log -----" >&2
            tail -n 40 "$log" >&2
        done
    fi
    for ns in "${LAB_NS[@]}"; do
        # Anything still inside (an iperf3 started in a subshell) was started by this script.
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    [[ -n $LAB_DIR ]] && rm -rf "$LAB_DIR"
    exit "$rc"
}

# lab_pair TAG: namespaces ${TAG}a and ${TAG}b (eth0 each, 192.0.2.1/24 and 192.0.2.2/24).
lab_pair() {
    LAB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/weft-$1-XXXXXX")
    trap lab_cleanup EXIT
    trap 'exit 130' INT TERM
    LAB_A="${1}a"
    LAB_B="${1}b"
    local ns
    for ns in "$LAB_A" "$LAB_B"; do
        ip netns del "$ns" 2>/dev/null || true # a leftover of an earlier run with this pid
        ip netns add "$ns"
        LAB_NS+=("$ns")
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
    done
    # Created directly inside the namespaces: the pair never exists in the root namespace.
    ip link add eth0 netns "$LAB_A" type veth peer name eth0 netns "$LAB_B"
    ip -n "$LAB_A" addr add 192.0.2.1/24 dev eth0
    ip -n "$LAB_B" addr add 192.0.2.2/24 dev eth0
    ip -n "$LAB_A" link set eth0 up
    ip -n "$LAB_B" link set eth0 up
}

# lab_config NAME HOST PEER PEER_HOST: writes NAME.toml for overlay host number HOST, whose one
# peer PEER (overlay host PEER_HOST) is at 192.0.2.PEER_HOST. Both key pairs must exist
# (lab_keys).
lab_config() {
    local name=$1 host=$2 peer=$3 peer_host=$4
    cat >"$LAB_DIR/$name.toml" <<TOML
[interface]
name = "weft0"
private_key_file = "$name.key"
listen_port = 51820
address = ["100.64.0.$host/24", "fd00:77::$host/64"]

[[peer]]
name = "$peer"
public_key = "$(cat "$LAB_DIR/$peer.pub")"
endpoint = "192.0.2.$peer_host:51820"
allowed_ips = ["100.64.0.$peer_host/32", "fd00:77::$peer_host/128"]
TOML
}

# lab_keys WEFT NAME...: NAME.key (mode 0600) and NAME.pub for each name.
lab_keys() {
    local weft=$1 name
    shift
    for name in "$@"; do
        "$weft" genkey --out "$LAB_DIR/$name.key"
        "$weft" pubkey <"$LAB_DIR/$name.key" >"$LAB_DIR/$name.pub"
    done
}

# lab_start WEFT NS NAME HOST: runs `weft up` for NAME.toml in NS, logging to NAME.log, and
# waits (up to 10 s) until weft0 has 100.64.0.HOST.
lab_start() {
    local weft=$1 ns=$2 name=$3 host=$4
    ip netns exec "$ns" "$weft" up --config "$LAB_DIR/$name.toml" 2>"$LAB_DIR/$name.log" &
    LAB_PIDS+=($!)
    local pid=$!
    for _ in $(seq 200); do
        if ip -n "$ns" -o addr show dev weft0 2>/dev/null | grep -q "inet 100.64.0.$host/"; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "weft up for $name exited early" >&2; return 1; }
        sleep 0.05
    done
    echo "weft up for $name did not bring weft0 up within 10 s" >&2
    return 1
}

# lab_wait_ping NS ADDR: pings once at a time until ADDR answers (10 s at most).
lab_wait_ping() {
    for _ in $(seq 20); do
        ip netns exec "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "$2 not reachable from $1" >&2
    return 1
}

# lab_wait_listen NS ADDR:PORT: waits (5 s at most) until a TCP socket listens there.
lab_wait_listen() {
    for _ in $(seq 50); do
        ip netns exec "$1" ss -Hltn 2>/dev/null | grep -qF " $2 " && return 0
        sleep 0.1
    done
    echo "nothing listens on $2 in $1" >&2
    return 1
}

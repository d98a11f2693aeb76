# shellcheck shell=bash
# Helpers shared by tests/demo.sh and tests/bench/*.sh (sourced, not run): two network
# namespaces on one veth link (or two subnets joined by a router namespace), keys and configs
# for a weft node in each, starting and stopping the nodes, and removing everything again on
# exit, whatever happened. Underlay addresses are 192.0.2.1 and 192.0.2.2 (lab_pair) or
# 198.51.100.1 and 203.0.113.2 (lab_router), overlay 100.64.0.1-2 and fd00:77::1-2; no traffic
# leaves the namespaces made here.

LAB_A=""    # namespace names, set by lab_pair or lab_router
LAB_B=""
LAB_R=""    # the router namespace of lab_router
LAB_LAST_PID="" # the node lab_start started last
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

# weft_binary: prints the path of the weft binary to use: $WEFT_BIN if set, else a release
# build made now (from the repository root, which the callers cd to).
weft_binary() {
    if [[ -n ${WEFT_BIN:-} ]]; then
        realpath "$WEFT_BIN"
    else
        say "building weft (release)" >&2
        cargo build --release -p weft-node >&2 || return 1
        echo "$PWD/target/release/weft"
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

# lab_init TAG: the temp dir and the exit trap that removes whatever the lab made.
lab_init() {
    LAB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/weft-$1-XXXXXX")
    trap lab_cleanup EXIT
    trap 'exit 130' INT TERM
}

# lab_netns NS: a fresh namespace NS with loopback up and IPv6 on, removed on exit.
lab_netns() {
    ip netns del "$1" 2>/dev/null || true # a leftover of an earlier run with this pid
    ip netns add "$1"
    LAB_NS+=("$1")
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -q -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
}

# lab_veth NS1 IF1 NS2 IF2: a veth pair between two namespaces, both ends up. Created directly
# inside them: the pair never exists in the root namespace.
lab_veth() {
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
}

# lab_pair TAG: namespaces ${TAG}a and ${TAG}b (eth0 each, 192.0.2.1/24 and 192.0.2.2/24).
lab_pair() {
    lab_init "$1"
    LAB_A="${1}a"
    LAB_B="${1}b"
    lab_netns "$LAB_A"
    lab_netns "$LAB_B"
    lab_veth "$LAB_A" eth0 "$LAB_B" eth0
    ip -n "$LAB_A" addr add 192.0.2.1/24 dev eth0
    ip -n "$LAB_B" addr add 192.0.2.2/24 dev eth0
}

# lab_router TAG MTU: namespaces ${TAG}a, ${TAG}r and ${TAG}b, the router forwarding between
# two subnets, its link to b (eth1 in r, eth0 in b) at MTU on both ends:
#   a 198.51.100.1 -- 198.51.100.254 r 203.0.113.254 -- 203.0.113.2 b
lab_router() {
    lab_init "$1"
    LAB_A="${1}a"
    LAB_R="${1}r"
    LAB_B="${1}b"
    local ns
    for ns in "$LAB_A" "$LAB_R" "$LAB_B"; do lab_netns "$ns"; done
    lab_veth "$LAB_A" eth0 "$LAB_R" eth0
    lab_veth "$LAB_R" eth1 "$LAB_B" eth0
    ip -n "$LAB_A" addr add 198.51.100.1/24 dev eth0
    ip -n "$LAB_R" addr add 198.51.100.254/24 dev eth0
    ip -n "$LAB_R" addr add 203.0.113.254/24 dev eth1
    ip -n "$LAB_B" addr add 203.0.113.2/24 dev eth0
    ip -n "$LAB_A" route add 203.0.113.0/24 via 198.51.100.254
    ip -n "$LAB_B" route add 198.51.100.0/24 via 203.0.113.254
    ip netns exec "$LAB_R" sysctl -q -w net.ipv4.ip_forward=1
    lab_router_mtu "$2"
}

# lab_router_mtu MTU: sets both ends of lab_router's r-b link to MTU (also under traffic).
lab_router_mtu() {
    ip -n "$LAB_R" link set dev eth1 mtu "$1"
    ip -n "$LAB_B" link set dev eth0 mtu "$1"
}

# lab_router_black_hole: lab_router's router silently drops the ICMP fragmentation-needed
# (and IPv6 packet-too-big) it would send for packets too big for the r-b link.
lab_router_black_hole() {
    ip netns exec "$LAB_R" iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP
    ip netns exec "$LAB_R" ip6tables -A OUTPUT -p icmpv6 --icmpv6-type packet-too-big -j DROP
}

# lab_config NAME HOST PEER PEER_HOST [ENDPOINT]: writes NAME.toml for overlay host number
# HOST, whose one peer PEER (overlay host PEER_HOST) is at ENDPOINT (default
# 192.0.2.PEER_HOST:51820). Both key pairs must exist (lab_keys).
lab_config() {
    local name=$1 host=$2 peer=$3 peer_host=$4 endpoint=${5:-192.0.2.$4:51820}
    cat >"$LAB_DIR/$name.toml" <<TOML
[interface]
name = "weft0"
private_key_file = "$name.key"
listen_port = 51820
address = ["100.64.0.$host/24", "fd00:77::$host/64"]

[[peer]]
name = "$peer"
public_key = "$(cat "$LAB_DIR/$peer.pub")"
endpoint = "$endpoint"
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

# lab_start WEFT NS NAME HOST: runs `weft up` for NAME.toml in NS, logging to NAME.log (anew,
# without colour codes), and waits (up to 10 s) until weft0 has 100.64.0.HOST. Its pid is left
# in LAB_LAST_PID.
lab_start() {
    local weft=$1 ns=$2 name=$3 host=$4
    NO_COLOR=1 ip netns exec "$ns" "$weft" up --config "$LAB_DIR/$name.toml" 2>"$LAB_DIR/$name.log" &
    LAB_PIDS+=($!)
    local pid=$!
    # shellcheck disable=SC2034 # for the scripts that source this file
    LAB_LAST_PID=$pid
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

# lab_stop PID: stops a node lab_start started (SIGTERM; SIGKILL after 3 s).
lab_stop() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

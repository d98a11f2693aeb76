#!/usr/bin/env bash
# weft in one command: builds the release binary and runs a three-node mesh on this machine,
# each node in its own network namespace, made the way an operator makes one:
#   alpha  `weft init`: the network's first member, on a public address
#   beta   `weft join` from behind a NAT (a masquerading router, private addresses)
#   gamma  `weft join` across a black-hole path: its link has MTU 1400 and the router in front
#          of it drops the ICMP "fragmentation needed" it should send
# It shows `weft status` on each node, pings across the mesh, runs a TCP transfer across the
# black hole (which only works because weft finds the path MTU by probing), shows alpha's
# Prometheus metrics, and keeps everything running until Enter is pressed; then it removes
# every namespace and file it made. Needs root; installs iproute2, iptables, iputils-ping,
# iperf3 and curl with apt-get if missing. DEMO_NO_WAIT=1 skips the wait for Enter.
#
#   alpha 203.0.113.1 ---- 203.0.113.126 core 203.0.113.129 ==MTU 1400== 203.0.113.130 gamma
#                                         192.0.2.254
#                                             |
#                                         192.0.2.1 nat 198.51.100.1 ---- 198.51.100.2 beta
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/lib.sh
source tests/lib.sh
need_root
ensure_tools ip:iproute2 iptables:iptables ping:iputils-ping sysctl:procps curl:curl
command -v iperf3 >/dev/null 2>&1 || ensure_tools iperf3:iperf3 || echo "(no iperf3: the transfer is skipped)"

weft=$(weft_binary)
lab_init demo
P="wdemo$$-"
ALPHA=${P}alpha BETA=${P}beta GAMMA=${P}gamma CORE=${P}core NAT=${P}nat

say "making five namespaces: three nodes, a core router and a NAT router"
for ns in "$ALPHA" "$BETA" "$GAMMA" "$CORE" "$NAT"; do lab_netns "$ns"; done
lab_veth "$ALPHA" eth0 "$CORE" eth0
lab_veth "$CORE" eth1 "$GAMMA" eth0
lab_veth "$CORE" eth2 "$NAT" eth0
lab_veth "$NAT" eth1 "$BETA" eth0
ip -n "$ALPHA" addr add 203.0.113.1/25 dev eth0
ip -n "$CORE" addr add 203.0.113.126/25 dev eth0
ip -n "$CORE" addr add 203.0.113.129/25 dev eth1
ip -n "$GAMMA" addr add 203.0.113.130/25 dev eth0
ip -n "$CORE" addr add 192.0.2.254/24 dev eth2
ip -n "$NAT" addr add 192.0.2.1/24 dev eth0
ip -n "$NAT" addr add 198.51.100.1/24 dev eth1
ip -n "$BETA" addr add 198.51.100.2/24 dev eth0
ip -n "$ALPHA" route add default via 203.0.113.126
ip -n "$GAMMA" route add default via 203.0.113.129
ip -n "$NAT" route add default via 192.0.2.254
ip -n "$BETA" route add default via 198.51.100.1
for ns in "$CORE" "$NAT"; do ip netns exec "$ns" sysctl -q -w net.ipv4.ip_forward=1; done
# The NAT: beta's private addresses leave as 192.0.2.1; idle UDP mappings are forgotten
# after 30 s, as on many home routers.
ip netns exec "$NAT" iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
ip netns exec "$NAT" sysctl -q -w net.netfilter.nf_conntrack_udp_timeout=30 \
    net.netfilter.nf_conntrack_udp_timeout_stream=30 2>/dev/null || true
# The black hole: gamma's link carries 1400-byte packets, and the core router drops the ICMP
# that would tell senders so.
ip -n "$CORE" link set dev eth1 mtu 1400
ip -n "$GAMMA" link set dev eth0 mtu 1400
ip netns exec "$CORE" iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP

# start NS NAME: runs `weft up` for NAME's directory in NS and waits until weft0 has an address.
start() {
    local ns=$1 name=$2
    NO_COLOR=1 ip netns exec "$ns" "$weft" up --config "$LAB_DIR/$name/weft.toml" 2>"$LAB_DIR/$name.log" &
    LAB_PIDS+=($!)
    local pid=$!
    for _ in $(seq 200); do
        ip -n "$ns" -o addr show dev weft0 2>/dev/null | grep -q "inet 100.64." && return 0
        kill -0 "$pid" 2>/dev/null || { echo "weft up for $name exited early" >&2; return 1; }
        sleep 0.05
    done
    echo "weft up for $name did not bring weft0 up within 10 s" >&2
    return 1
}
# overlay NS: the node's overlay IPv4 address.
overlay() { ip -n "$1" -o -4 addr show dev weft0 | awk '{ split($4, a, "/"); print a[1] }'; }
status() {
    echo "--- weft status on $1 ---"
    "$weft" status --config "$LAB_DIR/$1/weft.toml"
}

say "alpha: weft init --name alpha --network 100.64.0.0/24 (creates the network; alpha is its authority)"
ip netns exec "$ALPHA" "$weft" init --name alpha --network 100.64.0.0/24 --network-name demo --dir "$LAB_DIR/alpha"
start "$ALPHA" alpha

for member in beta gamma; do
    ns=$BETA
    [[ $member == gamma ]] && ns=$GAMMA
    say "alpha: weft invite --name $member; $member: weft join TOKEN"
    token=$("$weft" invite --name "$member" --expires 10m --config "$LAB_DIR/alpha/weft.toml")
    echo "token: $token"
    ip netns exec "$ns" "$weft" join "$token" --dir "$LAB_DIR/$member"
    start "$ns" "$member"
done
A4=$(overlay "$ALPHA") B4=$(overlay "$BETA") G4=$(overlay "$GAMMA")
echo "overlay addresses: alpha $A4, beta $B4 (behind the NAT), gamma $G4 (behind the black hole)"

say "pings across the mesh: beta -> alpha, beta -> gamma, gamma -> beta (beta is reached through its NAT)"
lab_wait_ping "$BETA" "$A4"
lab_wait_ping "$BETA" "$G4"
lab_wait_ping "$GAMMA" "$B4"
ip netns exec "$BETA" ping -c 3 -i 0.2 "$G4"
ip netns exec "$GAMMA" ping -c 3 -i 0.2 "$B4"

say "TCP transfer alpha -> gamma across the black hole (full-size packets: only fit after weft found the path MTU)"
if command -v iperf3 >/dev/null 2>&1; then
    ip netns exec "$GAMMA" iperf3 -s -1 -B "$G4" >/dev/null &
    LAB_PIDS+=($!)
    lab_wait_listen "$GAMMA" "$G4:5201"
    ip netns exec "$ALPHA" iperf3 -c "$G4" -t 5 -f m
else
    echo "(iperf3 missing: skipping the transfer)"
fi

say "weft status on each node (PMTU 1400 toward gamma: the black hole; keepalives keep beta's NAT mapping open)"
status alpha
status beta
status gamma

say "alpha's Prometheus metrics (the path MTU series; the full page has every metric)"
ip netns exec "$ALPHA" curl -s http://127.0.0.1:9820/metrics | grep -E '^weft_(path_mtu_bytes|peer_up|members|peer_keepalive_interval_seconds)'

say "the mesh is running. In another terminal, as root:"
echo "  ip netns exec $ALPHA curl -s http://127.0.0.1:9820/metrics   (every metric of alpha)"
echo "  $weft status --config $LAB_DIR/beta/weft.toml   (beta's view)"
echo "  ip netns exec $BETA ping $G4   (beta -> gamma)"
echo "  logs: $LAB_DIR/{alpha,beta,gamma}.log"
if [[ -z ${DEMO_NO_WAIT:-} ]] && [[ -t 0 ]]; then
    read -r -p "Press Enter to stop the nodes and remove everything... " _
fi
say "stopping the nodes and removing the namespaces"

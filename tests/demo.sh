#!/usr/bin/env bash
# weft in one command: builds the release binary, puts two nodes in two network namespaces
# on one virtual link, and shows them talking through the encrypted tunnel: ping over the
# IPv4 and IPv6 overlay, then a TCP transfer (iperf3). Everything it makes is removed on
# exit. Needs root; installs iproute2, iputils-ping and iperf3 with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/lib.sh
source tests/lib.sh
need_root
ensure_tools ip:iproute2 ping:iputils-ping sysctl:procps
command -v iperf3 >/dev/null 2>&1 || ensure_tools iperf3:iperf3 || echo "(no iperf3: falling back to nc)"

weft=$(weft_binary)

say "making namespaces wdemo$$a and wdemo$$b, linked by a veth pair: 192.0.2.1 <-> 192.0.2.2"
lab_pair "wdemo$$"

say "generating keys and configs in $LAB_DIR"
lab_keys "$weft" a b
lab_config a 1 b 2
lab_config b 2 a 1
echo "node a: overlay 100.64.0.1, fd00:77::1; public key $(cat "$LAB_DIR/a.pub")"
echo "node b: overlay 100.64.0.2, fd00:77::2; public key $(cat "$LAB_DIR/b.pub")"
echo "--- a.toml ---"
cat "$LAB_DIR/a.toml"

say "starting both nodes (weft up --config …, logs in $LAB_DIR/*.log)"
lab_start "$weft" "$LAB_A" a 1
lab_start "$weft" "$LAB_B" b 2
ip -n "$LAB_A" -br addr show dev weft0

say "ping a -> b over the IPv4 overlay (100.64.0.2)"
lab_wait_ping "$LAB_A" 100.64.0.2
ip netns exec "$LAB_A" ping -c 5 -i 0.2 100.64.0.2

say "ping a -> b over the IPv6 overlay (fd00:77::2)"
lab_wait_ping "$LAB_A" fd00:77::2
ip netns exec "$LAB_A" ping -c 5 -i 0.2 fd00:77::2

if command -v iperf3 >/dev/null 2>&1; then
    say "TCP throughput a -> b through the tunnel (iperf3, 5 s)"
    ip netns exec "$LAB_B" iperf3 -s -1 -B 100.64.0.2 >/dev/null &
    LAB_PIDS+=($!)
    lab_wait_listen "$LAB_B" 100.64.0.2:5201
    ip netns exec "$LAB_A" iperf3 -c 100.64.0.2 -t 5 -f m
elif command -v nc >/dev/null 2>&1; then
    say "TCP transfer a -> b through the tunnel (256 MiB with dd | nc)"
    ip netns exec "$LAB_B" nc -l -p 5201 >/dev/null &
    LAB_PIDS+=($!)
    lab_wait_listen "$LAB_B" '*:5201' || lab_wait_listen "$LAB_B" 0.0.0.0:5201
    # dd reports the rate on stderr once nc has pushed the bytes into the tunnel.
    ip netns exec "$LAB_A" bash -c 'dd if=/dev/zero bs=1M count=256 >/dev/tcp/100.64.0.2/5201'
else
    say "no iperf3 or nc: skipping the TCP transfer"
fi

say "done; stopping the nodes and removing the namespaces"

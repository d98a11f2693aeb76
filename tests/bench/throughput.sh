#!/usr/bin/env bash
# By hand, not in CI: how much the weft tunnel costs. Builds the release binary, then between
# two namespaces on one veth link measures single-stream TCP throughput (iperf3) and ping
# RTT (200 pings, 10 ms apart) twice: over the raw link (underlay addresses) and through the
# tunnel (overlay addresses). Prints both, the throughput ratio and the added latency. Then
# the tunnel again with small TCP segments (MSS 536, the IPv4 default, and 500: an inner MTU
# near 516), where one 64 KiB super-packet from the TUN device splits into ~130 segments:
# throughput and the sender's retransmissions for each MSS.
# Usage: sudo tests/bench/throughput.sh [SECONDS per iperf3 run, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/lib.sh
source tests/lib.sh
need_root
ensure_tools ip:iproute2 ping:iputils-ping sysctl:procps iperf3:iperf3
seconds=${1:-10}

weft=$(weft_binary)

lab_pair "wbench$$"
lab_keys "$weft" a b
lab_config a 1 b 2
lab_config b 2 a 1
lab_start "$weft" "$LAB_A" a 1
lab_start "$weft" "$LAB_B" b 2
lab_wait_ping "$LAB_A" 100.64.0.2

# iperf_run ADDR [MSS]: single-stream TCP a -> b (segments of MSS bytes if given), prints
# the receiver-side Mbit/s and the sender's retransmissions.
iperf_run() {
    local mss=()
    [[ -n ${2:-} ]] && mss=(-M "$2")
    ip netns exec "$LAB_B" iperf3 -s -1 -B "$1" >/dev/null &
    LAB_PIDS+=($!)
    lab_wait_listen "$LAB_B" "$1:5201"
    ip netns exec "$LAB_A" iperf3 -c "$1" -t "$seconds" -f m "${mss[@]}" |
        awk '/sender/ { retr = $(NF-1) } /receiver/ { mbits = $(NF-2) } END { print mbits, retr }'
}

# iperf_mbits ADDR: single-stream TCP a -> b, receiver-side Mbit/s.
iperf_mbits() {
    local result
    result=$(iperf_run "$1")
    echo "${result%% *}"
}

# rtt_ms ADDR: average ping RTT a -> b in ms.
rtt_ms() {
    ip netns exec "$LAB_A" ping -c 200 -i 0.01 -q "$1" | awk -F/ '/^rtt/ { print $5 }'
}

say "raw link: iperf3 ${seconds} s to 192.0.2.2"
raw_mbits=$(iperf_mbits 192.0.2.2)
say "tunnel: iperf3 ${seconds} s to 100.64.0.2"
tun_result=$(iperf_run 100.64.0.2)
tun_mbits=${tun_result%% *}
declare -A mss_result=([default]=$tun_result)
for mss in 536 500; do
    say "tunnel: iperf3 ${seconds} s to 100.64.0.2, MSS $mss"
    mss_result[$mss]=$(iperf_run 100.64.0.2 "$mss")
done
say "ping RTT, 200 pings each"
raw_rtt=$(rtt_ms 192.0.2.2)
tun_rtt=$(rtt_ms 100.64.0.2)

echo
printf '%-10s %16s %14s\n' path "TCP (Mbit/s)" "RTT avg (ms)"
printf '%-10s %16s %14s\n' raw "$raw_mbits" "$raw_rtt"
printf '%-10s %16s %14s\n' tunnel "$tun_mbits" "$tun_rtt"
awk -v r="$raw_mbits" -v t="$tun_mbits" -v rr="$raw_rtt" -v tr="$tun_rtt" 'BEGIN {
    printf "tunnel/raw throughput: %.1f %%\nadded RTT: %.3f ms\n", 100 * t / r, tr - rr
}'
echo
printf '%-10s %6s %16s %14s\n' path MSS "TCP (Mbit/s)" retransmits
for mss in default 536 500; do
    read -r mbits retr <<<"${mss_result[$mss]}"
    printf '%-10s %6s %16s %14s\n' tunnel "$mss" "$mbits" "$retr"
done

#!/usr/bin/env bash
# By hand, not in CI: what a forged ICMP "fragmentation needed" costs a working edge. Builds the
# release binary, then between two namespaces on one veth link (as throughput.sh) measures
# single-stream TCP throughput (iperf3) through the tunnel twice: undisturbed, and while a third
# address on b's link sends A one forged fragmentation-needed every 5 s, announcing MTU 576 and
# quoting the real a -> b UDP flow of the tunnel (192.0.2.1:51820 -> 192.0.2.2:51820). The
# kernel of a takes it (it caches the 576 toward b) and weft reads it from its socket's error
# queue; weft takes it as a hint only (RFC 8899 §4.6): it probes the size in use at once and
# keeps it while that passes. Prints both figures, the retransmits, the lowest PMTU a reported
# toward b and the ratio.
# Usage: sudo tests/bench/pmtu_forged_icmp.sh [SECONDS per iperf3 run, default 20]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/lib.sh
source tests/lib.sh
need_root
ensure_tools ip:iproute2 ping:iputils-ping sysctl:procps iperf3:iperf3 python3:python3
seconds=${1:-20}
# The forger's address, on b's link: neither node, nor a router on the path.
forger=192.0.2.99

weft=$(weft_binary)

lab_pair "wicmp$$"
ip -n "$LAB_B" addr add "$forger/24" dev eth0
lab_keys "$weft" a b
lab_config a 1 b 2
lab_config b 2 a 1
lab_start "$weft" "$LAB_A" a 1
lab_start "$weft" "$LAB_B" b 2
lab_wait_ping "$LAB_A" 100.64.0.2

# forge_icmp EVERY COUNT: from $forger in b's namespace, COUNT forged fragmentation-needed
# (MTU 576) to a, EVERY seconds apart, each quoting a full-size a -> b tunnel datagram.
forge_icmp() {
    ip netns exec "$LAB_B" python3 - "$forger" 192.0.2.1 192.0.2.2 51820 576 "$1" "$2" <<'PY'
import socket, struct, sys, time

src, a, b, port, mtu, every, count = sys.argv[1:8]
port, mtu, every, count = int(port), int(mtu), float(every), int(count)

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

# The quoted datagram: a's IPv4 header (DF set, 1480 bytes) and the first 8 bytes of UDP.
quoted_ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1480, 0x1234, 0x4000, 64, 17, 0,
                        socket.inet_aton(a), socket.inet_aton(b))
quoted_ip = quoted_ip[:10] + struct.pack("!H", checksum(quoted_ip)) + quoted_ip[12:]
quoted = quoted_ip + struct.pack("!HHHH", port, port, 1460, 0)
icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quoted
icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.bind((src, 0))
for i in range(count):
    s.sendto(icmp, (a, 0))
    if i + 1 < count:
        time.sleep(every)
PY
}

# iperf_run: single-stream TCP a -> b through the tunnel; prints "Mbit/s retransmits".
iperf_run() {
    ip netns exec "$LAB_B" iperf3 -s -1 -B 100.64.0.2 >/dev/null &
    LAB_PIDS+=($!)
    lab_wait_listen "$LAB_B" "100.64.0.2:5201"
    ip netns exec "$LAB_A" iperf3 -c 100.64.0.2 -t "$seconds" -f m |
        awk '/sender/ { retr = $(NF-1) } /receiver/ { mbits = $(NF-2) } END { print mbits, retr }'
}

# lowest_pmtu: the lowest PMTU a's log reported toward b so far ("-" if none).
lowest_pmtu() {
    grep -oE "path MTU changed .*peer=b .*pmtu=[0-9]+" "$LAB_DIR/a.log" |
        grep -oE "pmtu=[0-9]+" | cut -d= -f2 | sort -n | head -n 1 | grep . || echo -
}

say "undisturbed: iperf3 ${seconds} s to 100.64.0.2"
read -r plain_mbits plain_retr < <(iperf_run)
plain_low=$(lowest_pmtu)

say "a forged fragmentation-needed (MTU 576) every 5 s: iperf3 ${seconds} s to 100.64.0.2"
forge_icmp 5 $((seconds / 5 + 1)) &
forging=$!
LAB_PIDS+=("$forging")
read -r forged_mbits forged_retr < <(iperf_run)
wait "$forging" || true
forged_low=$(lowest_pmtu)
cached=$(ip -n "$LAB_A" route get 192.0.2.2 | grep -oE "mtu [0-9]+" || echo "none")

echo
printf '%-26s %14s %12s %18s\n' run "TCP (Mbit/s)" retransmits "lowest a->b PMTU"
printf '%-26s %14s %12s %18s\n' undisturbed "$plain_mbits" "$plain_retr" "$plain_low"
printf '%-26s %14s %12s %18s\n' "forged ICMP every 5 s" "$forged_mbits" "$forged_retr" "$forged_low"
echo "a's kernel route cache toward b after the forgeries: $cached"
awk -v p="$plain_mbits" -v f="$forged_mbits" 'BEGIN {
    printf "throughput under forged ICMP: %.1f %% of undisturbed\n", 100 * f / p
}'

#!/usr/bin/env bash
# By hand, not in CI: what keeping a NAT mapping open costs with the default keepalive
# (`persistent_keepalive = "auto"`). For each UDP conntrack timeout (5 s, 20 s and 60 s by
# default, all at once, each in its own namespaces) a puts a masquerading router between a
# and b; a (behind it, default config) reaches b once, then everything stays idle. After a
# warm-up (the NAT measurement needs a few minutes to narrow), the router's iptables counters
# count for a minute every byte of UDP between a and b (IP packets, headers included): all of
# it (keepalive pings and pongs, handshakes every 2 min, trials), and the main socket's share.
# Prints per NAT the keepalive interval a chose and bytes per second per peer.
# Usage: sudo tests/bench/keepalive.sh [TIMEOUT...]   (WARMUP=s, MEASURE=s; 180 and 60)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/lib.sh
source tests/lib.sh
need_root
ensure_tools ip:iproute2 ping:iputils-ping sysctl:procps iptables:iptables
warmup=${WARMUP:-180}
measure=${MEASURE:-60}

if [[ ${1:-} != --one ]]; then
    timeouts=("$@")
    ((${#timeouts[@]})) || timeouts=(5 20 60)
    WEFT_BIN=$(weft_binary)
    export WEFT_BIN WARMUP=$warmup MEASURE=$measure
    out=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench-keepalive-XXXXXX")
    pids=()
    for t in "${timeouts[@]}"; do
        "$0" --one "$t" >"$out/$t.txt" 2>&1 &
        pids+=($!)
    done
    say "${#timeouts[@]} NATs in parallel: ${warmup}s warm-up, ${measure}s measured"
    failed=0
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    printf '\n%-10s %-22s %-26s %14s %18s\n' timeout "keepalive chosen" "lifetime found" \
        "B/s (all UDP)" "B/s (main socket)"
    for t in "${timeouts[@]}"; do
        if row=$(grep '^ROW ' "$out/$t.txt"); then
            # shellcheck disable=SC2086 # the row's fields are meant to split
            printf '%-10s %-22s %-26s %14s %18s\n' ${row#ROW }
        else
            echo "timeout $t s: failed"
            cat "$out/$t.txt"
        fi
    done
    rm -rf "$out"
    exit "$failed"
fi

t=$2
weft=$(weft_binary)
lab_router "wka$t$$" 1500
ip netns exec "$LAB_R" iptables -t nat -A POSTROUTING -o eth1 -j MASQUERADE
ip netns exec "$LAB_R" test -e /proc/sys/net/netfilter/nf_conntrack_udp_timeout \
    || modprobe nf_conntrack
ip netns exec "$LAB_R" sysctl -q -w "net.netfilter.nf_conntrack_udp_timeout=$t" \
    "net.netfilter.nf_conntrack_udp_timeout_stream=$t"
# b has no route back to a's subnet: it only answers where the NAT sends from.
ip -n "$LAB_B" route del 198.51.100.0/24 via 203.0.113.254
lab_keys "$weft" a b
lab_config a 1 b 2 203.0.113.2:51820
lab_config b 2 a 1
sed -i '/^endpoint = /d' "$LAB_DIR/b.toml"

# Counters: every UDP packet between a and b, and those of a's main socket.
for rule in "-s 198.51.100.1 -d 203.0.113.2" "-s 203.0.113.2 -d 198.51.100.1" \
    "-s 198.51.100.1 -d 203.0.113.2 --sport 51820" "-s 203.0.113.2 -d 198.51.100.1 --dport 51820"; do
    # shellcheck disable=SC2086 # the rule's words are meant to split
    ip netns exec "$LAB_R" iptables -A FORWARD -p udp $rule
done
# bytes N: the byte counter of FORWARD rule N (1-based).
bytes() { ip netns exec "$LAB_R" iptables -nvxL FORWARD | awk -v n="$1" 'NR == n + 2 { print $2 }'; }

lab_start "$weft" "$LAB_B" b 2
lab_start "$weft" "$LAB_A" a 1
lab_wait_ping "$LAB_A" 100.64.0.2
sleep "$warmup"
all0=$(($(bytes 1) + $(bytes 2)))
main0=$(($(bytes 3) + $(bytes 4)))
sleep "$measure"
all1=$(($(bytes 1) + $(bytes 2)))
main1=$(($(bytes 3) + $(bytes 4)))
# Still reachable from the public side after the idle time.
ip netns exec "$LAB_B" ping -c 3 -W 2 100.64.0.1 >/dev/null

line=$(grep 'NAT mapping lifetime' "$LAB_DIR/a.log" | tail -n 1)
value() { grep -oE "(^| )$1=[^ ]+" <<<"$line" | head -n 1 | cut -d= -f2; }
rate() { awk -v b="$1" -v s="$measure" 'BEGIN { printf "%.1f", b / s }'; }
echo "ROW ${t}s every_$(value keepalive_s)s $(value lifetime_at_least_s)..$(value lifetime_below_s)s \
$(rate $((all1 - all0))) $(rate $((main1 - main0)))"

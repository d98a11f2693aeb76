#!/usr/bin/env bash
# By hand, not in CI: how fast weft finds and follows the path MTU through an ICMP black hole.
# Builds the release binary, then puts a router between two namespaces whose link to b has
# MTU 1400 and which drops every ICMP fragmentation-needed it would send, so only weft's own
# probing can learn the path MTU. Each run restarts both nodes, pings once to trigger the
# handshake, and reads from a's log the time from `handshake completed` to the first
# `path MTU changed ... pmtu=1400 ... confirmed=true` toward b, and the probes and probe bytes
# that line reports; then, while a pings b every 50 ms, lowers the bottleneck to 1300 and
# times the change until a confirms pmtu=1300. Prints one row per run and the medians.
# Usage: sudo tests/bench/pmtu.sh [RUNS, default 5]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/lib.sh
source tests/lib.sh
need_root
ensure_tools ip:iproute2 ping:iputils-ping sysctl:procps iptables:iptables
runs=${1:-5}

weft=$(weft_binary)

lab_router "wpmtu$$" 1400
lab_router_black_hole
lab_keys "$weft" a b
lab_config a 1 b 2 203.0.113.2:51820
lab_config b 2 a 1 198.51.100.1:51820

# epoch TIMESTAMP: seconds since the epoch, with fractions, of an RFC 3339 timestamp.
epoch() { date -u -d "$1" +%s.%N; }

# ms_between START END: milliseconds from one epoch time to another.
ms_between() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.0f", (e - s) * 1000 }'; }

# field LINE KEY: the value of KEY=value in a log line.
field() { grep -oE "(^| )$2=[^ ]+" <<<"$1" | head -n 1 | cut -d= -f2; }

# wait_log_line FILE PATTERN SECONDS: waits until a line of FILE matches PATTERN (ERE) and
# prints the first such line; fails after SECONDS.
wait_log_line() {
    local tries=$(($3 * 20)) line
    for _ in $(seq "$tries"); do
        line=$(grep -m 1 -E "$2" "$1" || true)
        if [[ -n $line ]]; then
            echo "$line"
            return 0
        fi
        sleep 0.05
    done
    echo "no line matching '$2' in $1 within $3 s" >&2
    return 1
}

# pmtu_line_re PMTU: a confirmed change toward b to exactly PMTU.
pmtu_line_re() { echo "path MTU changed .*peer=b .*pmtu=$1 .*confirmed=true"; }

# median: the median of the numbers on stdin.
median() {
    sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

rows=()
for run in $(seq "$runs"); do
    say "run $run of $runs"
    lab_router_mtu 1400
    lab_start "$weft" "$LAB_A" a 1
    pid_a=$LAB_LAST_PID
    lab_start "$weft" "$LAB_B" b 2
    pid_b=$LAB_LAST_PID
    log=$LAB_DIR/a.log

    ip netns exec "$LAB_A" ping -c 1 -W 5 100.64.0.2 >/dev/null
    handshake=$(wait_log_line "$log" "handshake completed .*peer=b" 10)
    found=$(wait_log_line "$log" "$(pmtu_line_re 1400)" 10)
    to_exact=$(ms_between "$(epoch "${handshake%% *}")" "$(epoch "${found%% *}")")
    probes=$(field "$found" probes)
    probe_bytes=$(field "$found" probe_bytes)

    ip netns exec "$LAB_A" ping -q -i 0.05 -w 60 100.64.0.2 >/dev/null &
    pinger=$!
    LAB_PIDS+=("$pinger")
    sleep 1 # the edge is carrying traffic when the path narrows
    changed=$(date -u +%s.%N)
    lab_router_mtu 1300
    followed=$(wait_log_line "$log" "$(pmtu_line_re 1300)" 30)
    to_follow=$(ms_between "$changed" "$(epoch "${followed%% *}")")
    kill "$pinger" 2>/dev/null || true
    wait "$pinger" 2>/dev/null || true

    lab_stop "$pid_a"
    lab_stop "$pid_b"
    rows+=("$run $to_exact $probes $probe_bytes $to_follow")
    echo "exact PMTU after $to_exact ms ($probes probes, $probe_bytes bytes); 1300 followed after $to_follow ms"
done

echo
printf '%-6s %18s %8s %12s %20s\n' run "ms to exact PMTU" probes "probe bytes" "ms to follow 1300"
for row in "${rows[@]}"; do
    # shellcheck disable=SC2086 # the row's fields are meant to split
    printf '%-6s %18s %8s %12s %20s\n' $row
done
col() { printf '%s\n' "${rows[@]}" | awk -v c="$1" '{ print $c }' | median; }
printf '%-6s %18s %8s %12s %20s\n' median "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)"

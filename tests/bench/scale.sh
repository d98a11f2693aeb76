#!/usr/bin/env bash
# By hand, not in CI: how a mesh of N members on one switch behaves as N grows (8, 16, 32 and
# 64 by default, one size after the other). For each N the ignored e2e test `scale_bench`
# (tests/e2e/scale.rs) builds the mesh with `weft init`, `weft invite` and `weft join`, starts
# all members at once, and measures the time until every ordered pair of members answers a
# ping over the overlay: after that fresh start, after SIGTERM to all and a simultaneous
# restart, after SIGKILL to all and a simultaneous restart, and after one member moves to
# another address. Then, after the mesh has been idle 5 s, it measures over IDLE seconds each
# member's RSS, CPU share, and packets per second on its control port (QUIC and joins) and data
# port (tunnel), and prints max and mean over the members. `fail:M/P` means M of P pairs never
# answered within LIMIT seconds; `frozen` counts members that stopped answering `weft status`
# within 1 s, exited, or ignored SIGTERM, summed over the steps.
# The daemons log at `info` (WEFT_E2E_LOG=debug to keep everything: at N = 64 debug logging
# costs more CPU than weft does).
# Usage: sudo tests/bench/scale.sh [N...]   (IDLE=s, LIMIT=s; 30 and 60; WEFT_BIN=path)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/lib.sh
source tests/lib.sh
need_root
ensure_tools ip:iproute2 iptables:iptables sysctl:procps getconf:libc-bin
idle=${IDLE:-30}
limit=${LIMIT:-60}
requested=("$@")
((${#requested[@]})) || requested=(8 16 32 64)

# Skip the sizes this machine cannot hold: allow 64 MiB per member (a member idles at a few
# tens of MiB) besides what is in use now.
available_mib=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
sizes=()
for n in "${requested[@]}"; do
    if ((n * 64 > available_mib)); then
        echo "skipping N=$n: needs about $((n * 64)) MiB, $available_mib MiB available" >&2
    else
        sizes+=("$n")
    fi
done
((${#sizes[@]})) || { echo "no size fits in memory" >&2; exit 1; }

WEFT_E2E_BIN=$(weft_binary)
WEFT_SCALE_N=$(IFS=,; echo "${sizes[*]}")
export WEFT_E2E_BIN WEFT_SCALE_N WEFT_SCALE_IDLE=$idle WEFT_SCALE_LIMIT=$limit
export WEFT_E2E_LOG=${WEFT_E2E_LOG:-info}
out=$(mktemp "${TMPDIR:-/tmp}/weft-bench-scale-XXXXXX")
trap 'rm -f "$out"' EXIT
say "N = ${sizes[*]}: steps up to ${limit}s each, ${idle}s idle measured ($WEFT_E2E_BIN)"
cargo test -p weft-node --test e2e scale_bench -- --ignored --nocapture --test-threads 1 2>&1 |
    tee "$out"

printf '\n%4s | %-51s | %-13s | %-11s | %-13s | %-13s | %s\n' "" \
    "time to full mesh (s)" "RSS (MiB)" "CPU (%)" "control pkt/s" "data pkt/s" ""
printf '%4s | %12s %12s %12s %12s | %6s %6s | %5s %5s | %6s %6s | %6s %6s | %s\n' N \
    fresh SIGTERM SIGKILL move max mean max mean max mean max mean frozen
grep '^ROW ' "$out" | while read -r _ n fresh term kill move rss_max rss_mean cpu_max cpu_mean \
    ctl_max ctl_mean data_max data_mean frozen; do
    printf '%4s | %12s %12s %12s %12s | %6s %6s | %5s %5s | %6s %6s | %6s %6s | %s\n' "$n" \
        "$fresh" "$term" "$kill" "$move" "$rss_max" "$rss_mean" "$cpu_max" "$cpu_mean" \
        "$ctl_max" "$ctl_mean" "$data_max" "$data_mean" "$frozen"
done

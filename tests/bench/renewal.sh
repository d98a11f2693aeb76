#!/usr/bin/env bash
# By hand, not in CI: what a certificate renewal costs. The ignored e2e test `renewal_bench`
# (tests/e2e/certificates.rs) builds a two-member network (`weft init --certificate-lifetime
# 1h`, one `weft join`), then forces 20 renewals with `weft renew` on the joined member and
# prints: the latency from the renewal request to the new certificate written and in use, as
# the daemon measures it (median, max) and as `weft renew` sees it end to end through the
# admin socket; and the bytes of control-plane traffic (IP packets, both ways, on the member's
# control port) each renewal adds to the idle traffic measured just before.
# Usage: sudo tests/bench/renewal.sh   (WEFT_BIN=path)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/lib.sh
source tests/lib.sh
need_root
ensure_tools ip:iproute2 iptables:iptables ping:iputils-ping
WEFT_E2E_BIN=$(weft_binary)
export WEFT_E2E_BIN WEFT_E2E_LOG=${WEFT_E2E_LOG:-info}
out=$(mktemp "${TMPDIR:-/tmp}/weft-bench-renewal-XXXXXX")
trap 'rm -f "$out"' EXIT
say "20 renewals ($WEFT_E2E_BIN)"
cargo test -p weft-node --test e2e renewal_bench -- --ignored --nocapture --test-threads 1 2>&1 |
    tee "$out"
grep '^ROW ' "$out" | sed 's/^ROW //' | tr ' ' '\n'

#!/usr/bin/env bash
# The one command that runs weft's whole test suite on a fresh Linux machine: installs the
# system tools the end-to-end tests drive when one is missing, makes sure the kernel pieces
# they need are there, then runs `cargo test --workspace` with any extra arguments passed on
# (e.g. `tests/run.sh -- --nocapture`). Must run as root: the end-to-end tests build network
# namespaces, veth links, TUN devices and NAT rules.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "tests/run.sh: must run as root (network namespaces, TUN devices, iptables)" >&2
    exit 1
fi

# command -> Debian package providing it
declare -A tools=(
    [ip]=iproute2
    [iptables]=iptables
    [ping]=iputils-ping
    [conntrack]=conntrack
    [modprobe]=kmod
    [sysctl]=procps
    [prometheus]=prometheus
    [promtool]=prometheus
    [curl]=curl
)
# Used by the deploy checks, which say so and skip a check when one is missing: a failed
# install of these does not stop the suite.
declare -A optional=(
    [systemd-analyze]=systemd
    [setpriv]=util-linux
)
missing=()
for tool in "${!tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${tools[$tool]}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "tests/run.sh: installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
extra=()
for tool in "${!optional[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || extra+=("${optional[$tool]}")
done
# The deploy tests read the Kubernetes manifest with PyYAML.
python3 -c 'import yaml' 2>/dev/null || extra+=(python3-yaml)
if ((${#extra[@]})); then
    echo "tests/run.sh: installing ${extra[*]} (optional)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${extra[@]}"; } ||
        echo "tests/run.sh: warning: could not install ${extra[*]}; the deploy checks that need them skip" >&2
fi

# Connection tracking (NAT scenario) is a module on some kernels and built in on others.
if [[ ! -d /proc/sys/net/netfilter ]]; then
    modprobe nf_conntrack 2>/dev/null || echo "tests/run.sh: warning: could not load nf_conntrack" >&2
fi
# Minimal containers may lack the TUN device node.
if [[ ! -c /dev/net/tun ]]; then
    mkdir -p /dev/net
    mknod -m 600 /dev/net/tun c 10 200
fi

exec cargo test --workspace "$@"

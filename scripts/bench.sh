#!/usr/bin/env bash
# Relay benchmark: turnpike against coturn on loopback (see BENCHMARKS.md).
# Usage: scripts/bench.sh [--netns] [ROUNDS]   (default 3; the rounds are
# interleaved, turnpike, coturn, bare forwarder, turnpike, ..., fresh
# processes each round, and one table of medians is printed at the end; 3
# rounds take about 4-5 minutes after the build).
# --netns: namespace mode (BENCH_NETNS=1): the server in a network
# namespace behind a veth pair, host CPU per relayed packet, and turnpike
# measured twice, in user space and with the XDP fast path; needs root.
# Knobs are environment variables read by benches/relay/main.rs and listed
# in BENCHMARKS.md: BENCH_SECS, BENCH_FLOWS, BENCH_CLIENTS, BENCH_RATE,
# BENCH_BATCH, BENCH_BURST, BENCH_IDLE, BENCH_PINGS, BENCH_CONNS,
# BENCH_FIGURES, BENCH_ONLY, BENCH_PIN, BENCH_PAIRED_ALSO, BENCH_NETNS, TURNPIKE_BIN,
# TURNSERVER_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

netns="${BENCH_NETNS:-0}"
if [ "${1:-}" = "--netns" ]; then netns=1; shift; fi
rounds="${1:-3}"
case "$rounds" in ''|*[!0-9]*|0) echo "usage: $0 [--netns] [ROUNDS]" >&2; exit 2 ;; esac

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if [ "$netns" = 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "$0 --netns: run as root (namespaces, setns, XDP)" >&2; exit 2; fi
  if ! command -v ethtool >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    echo "==> installing ethtool and iproute2 (the namespace mode's veth pair)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ethtool iproute2 >/dev/null
  fi
fi
if [ -z "${TURNSERVER_BIN:-}" ] && ! command -v turnserver >/dev/null 2>&1; then
  echo "==> installing coturn (the server compared against)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends coturn >/dev/null
fi

if [ -z "${TURNPIKE_BIN:-}" ]; then
  echo "==> cargo build --release --bin turnpike"
  cargo build --release --quiet --bin turnpike
fi
cargo bench --no-run --quiet --bench relay
echo "==> $rounds rounds"
BENCH_ROUNDS="$rounds" BENCH_NETNS="$netns" \
  TURNPIKE_BIN="${TURNPIKE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/turnpike}" \
  cargo bench --quiet --bench relay

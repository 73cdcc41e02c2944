#!/usr/bin/env bash
# Relay benchmark: turnpike against coturn on loopback (see BENCHMARKS.md).
# Usage: scripts/bench.sh [RUNS]   (default 1; each run takes about 40 s)
# Knobs are environment variables read by benches/relay.rs: BENCH_CLIENTS,
# BENCH_SECS, BENCH_RATE, BENCH_BATCH, BENCH_PIN, BENCH_ONLY, TURNPIKE_BIN,
# TURNSERVER_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-1}"
case "$runs" in ''|*[!0-9]*) echo "usage: $0 [RUNS]" >&2; exit 2 ;; esac

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if [ -z "${TURNSERVER_BIN:-}" ] && ! command -v turnserver >/dev/null 2>&1; then
  echo "==> installing coturn (the server compared against)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends coturn >/dev/null
fi

echo "==> cargo build --release --bin turnpike"
cargo build --release --quiet --bin turnpike
cargo bench --no-run --quiet --bench relay
for i in $(seq 1 "$runs"); do
  echo "==> run $i of $runs"
  TURNPIKE_BIN="${TURNPIKE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/turnpike}" cargo bench --quiet --bench relay
done

#!/usr/bin/env bash
# Soak: the long version of tests/soak.rs. 10,000 UDP allocations are
# created, refreshed, used (Send/Data and ChannelData through an echo peer
# on 127.0.0.1) and mostly left to expire, paced over about 10 minutes
# against the real binary (the debug build cargo test makes). At the end
# the allocation gauge must be 0, no relay socket open, the file
# descriptors back to the baseline and RSS within 10 % of it; the figures
# are printed as a table. `cargo test` runs a short version of the same
# test (1,000 allocations, about 70 s).
# Usage: scripts/soak.sh [ALLOCATIONS [SECS]]   (default 10000 600)
set -euo pipefail
cd "$(dirname "$0")/.."

allocations="${1:-10000}"
secs="${2:-600}"
for n in "$allocations" "$secs"; do
  case "$n" in ''|*[!0-9]*) echo "usage: $0 [ALLOCATIONS [SECS]]" >&2; exit 2 ;; esac
done

echo "==> soak: $allocations allocations over about $secs s"
TURNPIKE_SOAK_ALLOCATIONS="$allocations" TURNPIKE_SOAK_SECS="$secs" \
  cargo test --quiet --test soak -- --nocapture

#!/usr/bin/env bash
# The whole test suite, as the README's second command. It installs what
# the tests need on a fresh Debian machine (coturn's client tools, Debian's
# stun client and nftables, Chromium,
# systemd's verify tools, Redis and haproxy (started by the fleet tests),
# systemd-nspawn, mmdebstrap and cargo-deb (the Debian package under a real
# systemd), Pebble (the ACME tests' CA), clang-14 (the XDP program's object,
# rebuilt byte for byte), ethtool (the fast path's end-to-end tests), Node's
# playwright-core, Python's aiortc), then runs formatting
# and lint checks and every test. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v turnutils_uclient >/dev/null 2>&1 || need_apt+=(coturn)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium fonts-liberation)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
# The Debian package test boots a real systemd in a container
# (tests/operations/systemd_boot/): systemd-nspawn, and mmdebstrap to make
# its root once (cached in /var/cache/turnpike-tests).
command -v systemd-nspawn >/dev/null 2>&1 || need_apt+=(systemd-container)
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v pebble >/dev/null 2>&1 || need_apt+=(pebble)
# The XDP program's committed object is rebuilt by tests/xdp/object.rs
# with the compiler it is pinned to (src/net/xdp/build.sh): Debian
# bookworm's clang 14.0.6.
command -v clang-14 >/dev/null 2>&1 || need_apt+=(clang-14)
# The fast path's end-to-end tests turn checksum offload off on a veth end.
command -v ethtool >/dev/null 2>&1 || need_apt+=(ethtool)
# RFC 5780 NAT behaviour discovery: Debian's `stun` client
# (tests/interop/stun_client.rs), and nftables for the NATs the tests
# build in network namespaces (tests/turn/nat_discovery.rs).
command -v stun >/dev/null 2>&1 || need_apt+=(stun-client)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]} (Debian packages the tests drive)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# cargo-deb makes the package that test installs, from the binary `cargo
# test` builds (--no-build: no release build). About 4 minutes to compile,
# once per machine. 3.8.0 is the version the packaging was written for
# (newer ones may refuse to package a dev-profile binary).
if ! cargo deb --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-deb (the Debian package test)"
  cargo install cargo-deb --version 3.8.0 --locked --quiet
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "==> npm ci (playwright-core drives Debian's chromium; no browser download)"
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi
if ! python3 -c "import aiortc, websockets, prometheus_client" >/dev/null 2>&1; then
  echo "==> pip install aiortc, websockets, prometheus-client (the non-browser call; the metrics parser)"
  python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi

# The server asks for 4 MiB socket buffers (BENCHMARKS.md); Debian's
# default ceiling is 208 KiB. The relay fallback test holds a 4000-packet
# burst in one, as a production host tuned for TURN does.
for key in net.core.rmem_max net.core.wmem_max; do
  if [ "$(sysctl -n "$key" 2>/dev/null || echo 0)" -lt 4194304 ]; then
    echo "==> sysctl $key=4194304 (the server's socket buffers)"
    as_root sysctl -q -w "$key=4194304" || echo "    could not raise $key: the relay fallback test needs it"
  fi
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --all-targets
echo "==> fuzz harness tests (seeds reach allocation, channels and relaying; see fuzz/README.md)"
(cd fuzz && cargo test)

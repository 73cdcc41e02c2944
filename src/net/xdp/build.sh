#!/usr/bin/env bash
# Compiles the XDP program, src/net/xdp/relay.bpf.c, into the object that
# is committed beside it (relay.bpf.o) and that the server embeds, so that
# `cargo build` needs no clang. tests/xdp/object.rs runs this script into a
# scratch file and fails on any byte that differs from the committed one:
# the blob in git is provably this source.
#
#   src/net/xdp/build.sh            rewrite src/net/xdp/relay.bpf.o
#   src/net/xdp/build.sh OUT.o      write OUT.o instead
#
# Reproducible because everything that reaches the object is pinned:
# * the compiler: Debian bookworm's clang 14.0.6 (package clang-14; its
#   version string is in the object's debug info, so another build of
#   clang would change bytes even with identical code);
# * the flags below: BPF little-endian (bpfel, not the host's order),
#   instruction set v3 (kernels >= 5.1), -O2, -g for BTF (the maps are
#   described in BTF, and aya reads them);
# * the inputs: relay.bpf.c, relay.h and bpf_abi.h only (-nostdinc: no
#   system header, whose line numbers would end up in the debug info);
# * the paths: the source is compiled from its own folder by a relative
#   name, and -fdebug-compilation-dir=. keeps the working directory out
#   of the debug info, so the checkout's location does not matter.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/relay.bpf.o}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

clang="${CLANG:-clang-14}"
pinned="Debian clang version 14.0.6"
if ! command -v "$clang" >/dev/null 2>&1; then
  echo "build.sh: $clang is not installed (apt-get install clang-14; scripts/test.sh does)" >&2
  exit 1
fi
version="$("$clang" --version | head -n 1)"
if [ "$version" != "$pinned" ]; then
  echo "build.sh: $clang is \"$version\", the object is built with \"$pinned\"" >&2
  exit 1
fi

cd "$here"
"$clang" -target bpfel -mcpu=v3 -O2 -g -nostdinc \
  -Wall -Wextra -Werror \
  -fdebug-compilation-dir=. \
  -c relay.bpf.c -o "$out"

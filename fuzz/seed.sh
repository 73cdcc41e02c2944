#!/bin/sh
# Writes the seed corpora into fuzz/corpus/<target>/ (gitignored).
set -eu
cd "$(dirname "$0")"
cargo run --quiet --example write_seeds

#!/usr/bin/env bash
# Instructions per post, one command from a clean clone:  bash Benchmarks/instructions.sh
# Runs the release proxy and the bare libevent baseline under valgrind's callgrind, sends each
# the same 50-toggle posts on one loopback keep-alive connection, and prints user-space
# instructions per post and the proxy's costliest functions. Unlike timings on a shared
# machine, the counts repeat run after run: use them to compare two versions of the code.
# The proxy runs a second time with the same posts, each with its toggles in its own order
# (SHUFFLED): the window finds names fastest when posts keep the order it first saw.
# Knobs: WARMUP (500), POSTS (2000), BODIES (Benchmarks/out/bodies-50.tsv), SHUFFLED. About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=(valgrind)
source Benchmarks/build.sh
exec python3 Benchmarks/instructions.py --proxy "$proxy_bin" \
  --baseline "$out/baseline" --bodies "${BODIES:-$out/bodies-50.tsv}" --shuffled "${SHUFFLED:-$out/bodies-50-shuffled.tsv}"

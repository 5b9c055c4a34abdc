#!/usr/bin/env bash
# Instructions per post, one command from a clean clone:  bash Benchmarks/instructions.sh
# Runs the release proxy and the bare libevent baseline under valgrind's callgrind, sends each
# the same 50-toggle posts on one loopback keep-alive connection, and prints user-space
# instructions per post and the proxy's costliest functions. Unlike timings on a shared
# machine, the counts repeat run after run: use them to compare two versions of the code.
# Knobs: WARMUP (500), POSTS (2000), BODIES (Benchmarks/out/bodies-50.tsv). About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v cc >/dev/null || need+=(gcc)
pkg-config --exists libevent 2>/dev/null || need+=(libevent-dev libssl-dev zlib1g-dev pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q && apt-get install -y -q "${need[@]}"
fi
out=Benchmarks/out
mkdir -p "$out"
swift build -c release --product metrics-proxy 2>&1 | tail -1
cc -O2 -o "$out/baseline" Benchmarks/baseline.c $(pkg-config --cflags --libs libevent)
python3 Benchmarks/bodies.py "$out" > /dev/null
exec python3 Benchmarks/instructions.py --proxy "$(swift build -c release --show-bin-path)/metrics-proxy" \
  --baseline "$out/baseline" --bodies "${BODIES:-$out/bodies-50.tsv}"

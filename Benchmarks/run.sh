#!/usr/bin/env bash
# The benchmark, one command from a clean clone:  bash Benchmarks/run.sh
# Builds metrics-proxy in release mode and the bare libevent baseline, then drives both with
# identical wrk load, alternately (the baseline also with the epoll change list the proxy uses),
# then the server CPU each 50-toggle post costs with the server pinned to one CPU and wrk on the
# others, and the stalls under that load (stalls.c), and measures memory, window close and
# start-up. First, what the journal's way of appending costs the kernel (append.c).
# Loopback only; every loop is bounded. Knobs: DURATION (10s), ROUNDS (3), POSTS (1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
extra=(wrk)
source Benchmarks/build.sh
cat "$out/bodies.txt"
(cd "$out" && ./append)
echo
exec python3 Benchmarks/bench.py --proxy "$proxy_bin" \
  --baseline "$out/baseline" --bodies "$out" --out "$out"

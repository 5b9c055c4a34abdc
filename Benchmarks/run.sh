#!/usr/bin/env bash
# The benchmark, one command from a clean clone:  bash Benchmarks/run.sh
# Builds metrics-proxy in release mode and the bare libevent baseline, then drives both with
# identical wrk load, alternately (the baseline also with the epoll change list the proxy uses),
# then the server CPU each 50-toggle post costs with the server pinned to one CPU and wrk on the
# others, and measures memory, window close and start-up.
# Loopback only; every loop is bounded. Knobs: DURATION (10s), ROUNDS (3), POSTS (1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v cc >/dev/null || need+=(gcc)
pkg-config --exists libevent 2>/dev/null || need+=(libevent-dev libssl-dev zlib1g-dev pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q && apt-get install -y -q "${need[@]}"
fi
out=Benchmarks/out
mkdir -p "$out"
swift build -c release --product metrics-proxy 2>&1 | tail -1
cc -O2 -o "$out/baseline" Benchmarks/baseline.c $(pkg-config --cflags --libs libevent)
python3 Benchmarks/bodies.py "$out"
exec python3 Benchmarks/bench.py --proxy "$(swift build -c release --show-bin-path)/metrics-proxy" \
  --baseline "$out/baseline" --bodies "$out" --out "$out"

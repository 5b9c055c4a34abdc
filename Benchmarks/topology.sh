#!/usr/bin/env bash
# What each topology cuts, one command from a clean clone:  bash Benchmarks/topology.sh
# Builds the release proxy, then runs each deployment shape (sidecars, a node agent, node
# agents under a cluster proxy, a proxy behind Unleash Edge) on loopback with SDK-like
# posters and the recording fake upstream, and prints SDK posts in per upstream request out,
# checking that every count arrived. Knobs: DURATION (12), SDK_INTERVAL (2), WINDOW (2s).
# About 1.5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
source Benchmarks/build.sh
exec python3 Benchmarks/topology.py --proxy "$proxy_bin" --fake Tests/Fixtures/fake_upstream.py

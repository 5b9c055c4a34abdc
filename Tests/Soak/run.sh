#!/usr/bin/env bash
# The soak and abuse run against a release build: bash Tests/Soak/run.sh [seconds, default 180]
# Loopback only; stops by itself; exits non-zero if any check failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product metrics-proxy >/dev/null
exec python3 Tests/Soak/soak.py --binary "$(swift build -c release --show-bin-path)/metrics-proxy" --seconds "${1:-180}"

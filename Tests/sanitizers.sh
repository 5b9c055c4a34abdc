#!/usr/bin/env bash
# Runs the whole test suite under sanitizers, each in its own build directory:
#   bash Tests/sanitizers.sh [address] [thread]      (default: both)
# The tests start the instrumented metrics-proxy binary too; a sanitizer report in any proxy
# log fails the test that ran it (ProxyProcess checks), as does a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=("$@")
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(address thread)
for s in "${sanitizers[@]}"; do
    echo "== swift test --sanitize=$s"
    swift build --build-tests --scratch-path ".build/sanitize-$s" --sanitize="$s" -Xswiftc -warnings-as-errors
    swift test --skip-build --scratch-path ".build/sanitize-$s" --sanitize="$s" --disable-swift-testing
done

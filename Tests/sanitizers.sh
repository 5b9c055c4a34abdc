#!/usr/bin/env bash
# Runs the whole test suite under sanitizers, each in its own build directory:
#   bash Tests/sanitizers.sh [address] [thread]      (default: both)
# The tests start the instrumented metrics-proxy binary too; a sanitizer report in any proxy
# log fails the test that ran it (ProxyProcess checks), as does a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=("$@")
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(address thread)
# Leaks are checked in the proxy (the daemon that runs for months), not in the XCTest runner,
# whose Foundation and XCTest internals are not ours to fix.
export ASAN_OPTIONS=detect_leaks=0
export METRICS_PROXY_ASAN_OPTIONS=detect_leaks=1
export LSAN_OPTIONS="suppressions=$PWD/Tests/lsan.supp:print_suppressions=0"
for s in "${sanitizers[@]}"; do
    # Tests that measure resident memory skip that figure: it would be the sanitizer's.
    export METRICS_PROXY_SANITIZER="$s"
    echo "== swift test --sanitize=$s"
    swift build --build-tests --scratch-path ".build/sanitize-$s" --sanitize="$s" -Xswiftc -warnings-as-errors
    swift test --skip-build --scratch-path ".build/sanitize-$s" --sanitize="$s" --disable-swift-testing
done

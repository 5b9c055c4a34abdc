#!/usr/bin/env bash
# Builds the libFuzzer targets (decoder, config, spool, journal) with AddressSanitizer and runs each
# for a bounded time on a copy of its seed corpus, with its dictionary.
#   bash Tests/Fuzz/run.sh [seconds per target, default 60] [target ...]
# A crash leaves its input in .build/fuzz/artifacts/<target>/ and the script exits non-zero:
# copy the input to Tests/Fixtures/fuzz-regressions/<target>/ (the tests replay every file
# there), then fix the code.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
shift || true
targets=("${@:-decoder config spool journal}")
targets=(${targets[@]})
out=.build/fuzz
mkdir -p "$out"
status=0
for t in "${targets[@]}"; do
    echo "== $t: building"
    # The harness joins the core's own sources and the checks (FuzzTargets.swift, which the unit
    # tests also run) in one module, so it reaches internals.
    mapfile -t core < <(find Sources/MetricsProxyCore -name '*.swift' | sort)
    swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name MetricsProxyCore -D FUZZING \
        -I Sources/CZlib "${core[@]}" Tests/MetricsProxyCoreTests/FuzzTargets.swift "Tests/Fuzz/targets/$t.swift" -lz \
        -o "$out/$t" 2>&1 | grep -v "Cannot export local symbol" || true
    [ -x "$out/$t" ] || { echo "build of $t failed"; exit 1; }
    work="$out/corpus/$t"
    mkdir -p "$work" "$out/artifacts/$t"
    cp -n Tests/Fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
    cp -n Tests/Fixtures/fuzz-regressions/"$t"/* "$work"/ 2>/dev/null || true
    echo "== $t: fuzzing for ${seconds}s"
    if ! "$out/$t" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -dict="Tests/Fuzz/dict/$t.dict" -artifact_prefix="$out/artifacts/$t/" -print_final_stats=1 "$work" \
        >"$out/$t.log" 2>&1; then
        status=1
        echo "== $t: FAILED; see $out/$t.log and $out/artifacts/$t/"
        grep -m5 -E "ERROR|Fatal error|Precondition|SUMMARY" "$out/$t.log" || true
    fi
    grep -E "^stat::number_of_executed_units|^stat::new_units_added|^stat::peak_rss_mb" "$out/$t.log" | sed "s/^/   /" || true
    echo "   corpus: $(ls "$work" | wc -l) inputs"
done
exit $status

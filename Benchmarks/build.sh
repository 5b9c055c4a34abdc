# Sourced by run.sh and instructions.sh: installs what is missing (the tools they name in
# `extra`, a C compiler, libevent), builds the release proxy and the bare libevent baseline,
# and writes the bodies. Leaves `out` and `proxy_bin` set.
need=()
for tool in "${extra[@]}"; do command -v "$tool" >/dev/null || need+=("$tool"); done
command -v cc >/dev/null || need+=(gcc)
pkg-config --exists libevent 2>/dev/null || need+=(libevent-dev libssl-dev zlib1g-dev pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q && apt-get install -y -q "${need[@]}"
fi
out=Benchmarks/out
mkdir -p "$out"
swift build -c release --product metrics-proxy 2>&1 | tail -1
cc -O2 -o "$out/baseline" Benchmarks/baseline.c $(pkg-config --cflags --libs libevent)
cc -O2 -pthread -o "$out/stalls" Benchmarks/stalls.c
cc -O2 -o "$out/append" Benchmarks/append.c
python3 Benchmarks/bodies.py "$out" > "$out/bodies.txt"
proxy_bin="$(swift build -c release --show-bin-path)/metrics-proxy"

#!/usr/bin/env bash
# Disk writes behind durable acknowledgements, run after run on one server:
#
#   optional 15 s of wrk clicks first (CLICKS=1, the default), then RUNS consecutive 9 s
#   runs of 10,000 conversions/s open loop (clicktrail-load, scenario conversions); each
#   run reports its corrected p50/p99/p99.9 and the bytes the disk wrote meanwhile
#   (/proc/diskstats of the device holding the data directory).
#
# Each run appends ~20 MB of conversions. What the disk writes beyond that is write
# amplification: it found group commits rewriting whole 2 MiB page-cache folios
# (64 -> 166 -> 608 -> 1,713 MB over four runs before segments asked for page-sized folios).
#
# Usage: benches/durable_writes.sh [runs = 4]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-4}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --bin clicktrail -q && cargo build --release -p clicktrail-load -q
work=$(mktemp -d -p "$PWD/target")
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# The block device behind the data directory, by major:minor (names differ under LVM).
majmin=$(findmnt -no MAJ:MIN -T "$work" | tr -d ' ')
written() { awk -v d="$majmin" '$1 ":" $2 == d { printf "%.0f\n", $10 * 512 }' /proc/diskstats; }
[ -n "$(written)" ] || { echo "no /proc/diskstats line for device $majmin" >&2; exit 1; }
sed 's/^listen = .*/listen = "127.0.0.1:18091"/' config/demo.toml > "$work/ct.toml"
RUST_LOG=warn target/release/clicktrail serve --config "$work/ct.toml" --data-dir "$work/data" &
pid=$!
ready=
for _ in $(seq 100); do
  kill -0 "$pid" 2>/dev/null || { echo "server exited (port 18091 busy?)" >&2; exit 1; }
  curl -sf -o /dev/null http://127.0.0.1:18091/readyz && { ready=1; break; }
  sleep 0.1
done
[ -n "$ready" ] || { echo "server not ready" >&2; exit 1; }
if [ "${CLICKS:-1}" = 1 ]; then
  wrk -t2 -c64 -d15s 'http://127.0.0.1:18091/c/demo?sub1=bench' | grep Requests/sec
fi
for i in $(seq "$runs"); do
  before=$(written)
  target/release/clicktrail-load --target http://127.0.0.1:18091 --rate 10000 --duration 8s \
    --warmup 1s --connections 128 --scenario conversions --quiet --json "$work/run.json" > /dev/null
  after=$(written)
  python3 - "$work/run.json" "$i" "$before" "$after" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["latency_us"]["all"]["corrected"]
mb = (int(sys.argv[4]) - int(sys.argv[3])) / 1e6
print(f"run {sys.argv[2]}: p50 {a['p50']/1e3:.2f} ms  p99 {a['p99']/1e3:.2f} ms  "
      f"p99.9 {a['p99.9']/1e3:.2f} ms  disk written {mb:,.0f} MB")
PY
done

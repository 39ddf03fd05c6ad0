#!/usr/bin/env bash
# What disk writes alone do to open-loop click latency on this machine, with no clicktrail
# involved: the bare may_minihttp static-302 baseline (benches/baseline) is driven at a
# fixed rate while a side process writes W MB each second (one pwrite + fdatasync, as a
# group commit or background sync does), for several W. clicktrail must write what it
# records: its bytes per click (from `clicktrail journal inspect` after a short run) times
# the click rate gives the W it has to live with at that rate.
#
# On the project's 2-vCPU VM (2026-11-26) the baseline at 20,000 clicks/s gave p99 1.1 ms
# with no side writes (2.9 ms once, right after a build), 0.9-2.4 ms with 2 MB/s,
# 2.1-2.8 ms with 4 MB/s, 7.7 ms with 8 MB/s and 6.0-9.7 ms with 16 MB/s; clicktrail
# records ~830 bytes per browser click, 16.5 MB/s at that rate. A 4 KiB fdatasync every 100 ms alone gave p99 8.6 ms: every flush stalls the guest.
#
# Usage: benches/io_stall.sh [rate=20000] [seconds=8] [MB per second ...=0 2 4 8 16]
# Loopback only; writes its side file under a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-20000}
secs=${2:-8}
shift $(( $# > 2 ? 2 : $# ))
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(0 2 4 8 16)
cargo build --release --bin clicktrail -q && cargo build --release -p clicktrail-load -q
(cd benches/baseline && cargo build --release -q)
# Under target/, on the same disk as a data directory (a tmpfs /tmp would make fdatasync free).
mkdir -p target
work=$(mktemp -d -p "$PWD/target")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
load=target/release/clicktrail-load
wait_port() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done; return 1; }

# clicktrail's bytes per click: a short run, then the ingest partitions' end offsets.
sed 's/^listen = .*/listen = "127.0.0.1:18091"/' config/demo.toml > "$work/ct.toml"
RUST_LOG=warn target/release/clicktrail serve --config "$work/ct.toml" --data-dir "$work/data" &
ct=$!
pids+=($ct)
wait_port 18091 /readyz
$load --target http://127.0.0.1:18091 --rate 5000 --duration 2s --scenario clicks --quiet \
  --json "$work/ct.json" > /dev/null
kill "$ct"
wait "$ct" 2>/dev/null || true
pids=()
target/release/clicktrail journal inspect --config "$work/ct.toml" --data-dir "$work/data" \
  > "$work/inspect.txt"
python3 - "$work" "$rate" <<'PY'
import json, re, sys
work, rate = sys.argv[1], int(sys.argv[2])
clicks = json.load(open(f"{work}/ct.json"))["status"].get("302", 0)
end = sum(int(m.group(1)) for m in re.finditer(r"ingest-\d+\s+segments\s+\d+\s+records\s+\d+\s+end offset\s+(\d+)",
                                                open(f"{work}/inspect.txt").read()))
per = end / max(clicks, 1)
# Ingest partitions only: derived records (verdicts, stats) come on top of this.
print(f"clicktrail ingest bytes per click: {per:.0f} -> {per * rate / 1e6:.1f} MB/s at {rate}/s")
PY

benches/baseline/target/release/clicktrail-baseline 127.0.0.1:18090 2>/dev/null &
pids+=($!)
wait_port 18090 /

cat > "$work/writer.py" <<'PY'
import os, sys, time
mb, secs, path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
buf, off, start = b"x" * int(mb * (1 << 20)), 0, time.time()
due = start
while time.time() - start < secs:
    os.pwrite(fd, buf, off)
    os.fdatasync(fd)
    off += len(buf)
    due += 1  # W MB per second however long the write took
    time.sleep(max(0.0, due - time.time()))
PY

printf '%-14s %10s %10s %10s\n' "side writes" p50 p99 p99.9
for mb in "${sizes[@]}"; do
  writer=""
  if [ "$mb" != 0 ]; then
    python3 "$work/writer.py" "$mb" "$((secs + 2))" "$work/side" &
    writer=$!
    pids+=("$writer")
  fi
  $load --target http://127.0.0.1:18090 --rate "$rate" --duration "${secs}s" --warmup 1s \
    --scenario clicks --quiet --json "$work/open-$mb.json" > /dev/null || true
  [ -n "$writer" ] && { kill "$writer" 2>/dev/null || true; wait "$writer" 2>/dev/null || true; }
  rm -f "$work/side"
  python3 - "$work/open-$mb.json" "$mb" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["latency_us"]["all"]["corrected"]
print(f"{sys.argv[2] + ' MB/s':<14} {a['p50']/1e3:8.2f}ms {a['p99']/1e3:8.2f}ms {a['p99.9']/1e3:8.2f}ms")
PY
done

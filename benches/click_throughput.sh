#!/usr/bin/env bash
# Click edge throughput, side by side with the bare baseline, in one run:
#
#   1. closed loop, wrk -t2 -c64: the may_minihttp static-302 baseline (benches/baseline),
#      then clicktrail's full click path (GET /c/demo: parse, sign, journal, 302 + cookies);
#   2. open loop at a fixed rate (wrk with a per-connection delay), reading clicktrail's own
#      redirect latency histogram from /metrics before and after: server-side p50/p99/p99.9.
#
# Usage: benches/click_throughput.sh [duration_s=10] [rate=20000]
# Needs wrk (installed from Debian's packages when missing). Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
rate=${2:-20000}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

cargo build --release --bin clicktrail -q
(cd benches/baseline && cargo build --release -q)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; return 1; }
wait_ready() { for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ] && return 0; sleep 0.1; done; return 1; }
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }

benches/baseline/target/release/clicktrail-baseline 127.0.0.1:18090 2>/dev/null &
pids+=($!)
wait_port 18090
wrk -t2 -c64 -d"${duration}s" http://127.0.0.1:18090/c/demo > "$work/base.txt"
kill "${pids[0]}"

RUST_LOG=warn target/release/clicktrail serve --data-dir "$work/data" --listen 127.0.0.1:18091 &
pids+=($!)
wait_ready 18091
wrk -t2 -c64 -d"${duration}s" 'http://127.0.0.1:18091/c/demo?sub1=bench&utm_source=wrk' > "$work/ct.txt"
if grep -q "Non-2xx" "$work/ct.txt"; then echo "clicktrail answered non-3xx during the run:"; cat "$work/ct.txt"; fi

# Open loop: each of 100 connections sends a request, waits, sends the next. wrk adds the
# delay after each response, so a short calibration run measures the per-request overhead
# and the delay is cut by it to hit the target rate.
conns=100
delay_ms=$(python3 -c "print(1000.0 * $conns / $rate)")
echo "function delay() return $delay_ms end" > "$work/pace.lua"
wrk -t2 -c$conns -d3s -s "$work/pace.lua" 'http://127.0.0.1:18091/c/demo?sub1=calibrate' > "$work/cal.txt"
got=$(rps "$work/cal.txt")
delay_ms=$(python3 -c "print(max(0.05, $delay_ms - 1000.0 * ($conns / $got - $conns / $rate)))")
echo "function delay() return $delay_ms end" > "$work/pace.lua"
curl -s http://127.0.0.1:18091/metrics > "$work/m0.txt"
wrk -t2 -c$conns -d"${duration}s" -s "$work/pace.lua" 'http://127.0.0.1:18091/c/demo?sub1=paced' > "$work/paced.txt"
curl -s http://127.0.0.1:18091/metrics > "$work/m1.txt"

python3 - "$work" "$rate" <<'PY'
import re, sys
work, rate = sys.argv[1], int(sys.argv[2])
def rps(f):
    return float(re.search(r"Requests/sec:\s+([\d.]+)", open(f"{work}/{f}").read()).group(1))
def hist(f):
    b = {}
    for line in open(f"{work}/{f}"):
        m = re.match(r'clicktrail_redirect_duration_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
        if m:
            b[m.group(1)] = int(m.group(2))
    return b
h0, h1 = hist("m0.txt"), hist("m1.txt")
delta = [(k, h1[k] - h0.get(k, 0)) for k in h1]
total = delta[-1][1]
def q(p):
    for le, n in delta:
        if n >= p * total:
            return "> 1 s" if le == "+Inf" else f"<= {float(le) * 1e6:.0f} us"
base, ct = rps("base.txt"), rps("ct.txt")
print()
print("| measurement | value |")
print("|---|---|")
print(f"| baseline (may_minihttp static 302), wrk -t2 -c64 | {base:,.0f} req/s |")
print(f"| clicktrail GET /c/demo, wrk -t2 -c64 | {ct:,.0f} clicks/s |")
print(f"| ratio clicktrail / baseline | {ct / base:.0%} |")
print(f"| open loop, target {rate:,}/s, achieved | {rps('paced.txt'):,.0f} clicks/s ({total:,} clicks) |")
print(f"| server-side redirect latency p50 / p99 / p99.9 | {q(0.5)} / {q(0.99)} / {q(0.999)} |")
PY

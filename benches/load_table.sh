#!/usr/bin/env bash
# The README's benchmark table, in one run on this machine (generator on the same box):
#
#   1. closed loop, 64 connections, 2 threads: the bare may_minihttp static-302 baseline,
#      the actix-web floor (benches/actix_floor: clicktrail's framework and server set-up
#      answering a static 302, no click work) and clicktrail's full click path, each driven
#      by wrk and by clicktrail-load with the same request (scenario wrk-clicks), so both
#      tools are compared on every server;
#   2. open loop at 10k, 20k and 40k clicks/s with realistic browser clicks (scenario
#      clicks): corrected p50/p99/p99.9, and the server's own redirect histogram over the
#      same run (the independent measurement: server time without queueing);
#   3. agreement at a low rate (5k/s): corrected and uncorrected latency against wrk pacing
#      the same rate and against the server histogram;
#   4. conversions with durable acknowledgement: closed loop (max/s) and open loop 10k/s.
#
# Usage: benches/load_table.sh [seconds per run = 10]
# Needs wrk (installed from Debian's packages when missing). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --bin clicktrail -q && cargo build --release -p clicktrail-load -q
(cd benches/baseline && cargo build --release -q)
(cd benches/actix_floor && cargo build --release -q)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
load=target/release/clicktrail-load
wait_ready() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done; return 1; }

benches/baseline/target/release/clicktrail-baseline 127.0.0.1:18090 2>/dev/null &
pids+=($!)
benches/actix_floor/target/release/clicktrail-actix-floor 127.0.0.1:18092 &
pids+=($!)
sed 's/^listen = .*/listen = "127.0.0.1:18091"/' config/demo.toml > "$work/ct.toml"
RUST_LOG=warn target/release/clicktrail serve --config "$work/ct.toml" --data-dir "$work/data" &
pids+=($!)
wait_ready 18090 /
wait_ready 18092 /c/demo
wait_ready 18091 /readyz

url='/c/demo?sub1=bench&utm_source=wrk'
for server in 18090 18092 18091; do
  wrk -t2 -c64 -d"${secs}s" "http://127.0.0.1:$server$url" > "$work/wrk-$server.txt"
  $load --target "http://127.0.0.1:$server" --max --duration "${secs}s" --warmup 1s \
    --connections 64 --threads 2 --scenario wrk-clicks --quiet --json "$work/max-$server.json" > /dev/null
done

metrics() { curl -s http://127.0.0.1:18091/metrics > "$1"; }
for rate in 10000 20000 40000; do
  metrics "$work/m0-$rate.txt"
  $load --target http://127.0.0.1:18091 --rate "$rate" --duration "${secs}s" --warmup 2s \
    --scenario clicks --quiet --json "$work/open-$rate.json" --hgrm "$work/open-$rate.hgrm" > /dev/null || true
  metrics "$work/m1-$rate.txt"
done

# Agreement at 5k/s: wrk paces 50 connections with a fixed delay after each response.
metrics "$work/m0-5000.txt"
$load --target http://127.0.0.1:18091 --rate 5000 --duration "${secs}s" --warmup 1s \
  --scenario wrk-clicks --quiet --json "$work/open-5000.json" > /dev/null
metrics "$work/m1-5000.txt"
echo "function delay() return 10 end" > "$work/pace.lua"
wrk -t2 -c50 -d"${secs}s" --latency -s "$work/pace.lua" "http://127.0.0.1:18091$url" > "$work/wrk-paced.txt"

$load --target http://127.0.0.1:18091 --max --duration "${secs}s" --warmup 1s \
  --connections 64 --scenario conversions --quiet --json "$work/conv-max.json" > /dev/null || true
$load --target http://127.0.0.1:18091 --rate 10000 --duration "${secs}s" --warmup 1s \
  --connections 128 --scenario conversions --quiet --json "$work/conv-10k.json" > /dev/null || true

python3 - "$work" <<'PY'
import json, re, sys
work = sys.argv[1]
def j(name): return json.load(open(f"{work}/{name}.json"))
def wrk_rps(f): return float(re.search(r"Requests/sec:\s+([\d.]+)", open(f"{work}/{f}").read()).group(1))
def wrk_pct(f, p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", open(f"{work}/{f}").read(), re.M)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6}[u]
def hist(f):
    b = {}
    for line in open(f"{work}/{f}"):
        m = re.match(r'clicktrail_redirect_duration_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
        if m: b[m.group(1)] = int(m.group(2))
    return b
def server_q(rate, q):
    h0, h1 = hist(f"m0-{rate}.txt"), hist(f"m1-{rate}.txt")
    delta = [(k, h1[k] - h0.get(k, 0)) for k in h1]
    total = delta[-1][1]
    for le, n in delta:
        if n >= q * total:
            return "> 1 s" if le == "+Inf" else f"≤ {fmt(float(le) * 1e6)}"
def fmt(us):
    return f"{us / 1e3:.2f} ms" if us >= 1000 else f"{us:.0f} µs"
def lat(d, kind="all", corr="corrected"):
    return d["latency_us"][kind][corr]
print()
b_wrk, c_wrk = wrk_rps("wrk-18090.txt"), wrk_rps("wrk-18091.txt")
f_wrk, f_ld = wrk_rps("wrk-18092.txt"), j("max-18092")["achieved_rate"]
b_ld, c_ld = j("max-18090")["achieved_rate"], j("max-18091")["achieved_rate"]
print("| closed loop, 64 connections, 2 threads | wrk | clicktrail-load |")
print("|---|---|---|")
print(f"| bare baseline (may_minihttp static 302) | {b_wrk:,.0f}/s | {b_ld:,.0f}/s |")
print(f"| actix-web floor (static 302, no click work) | {f_wrk:,.0f}/s | {f_ld:,.0f}/s |")
print(f"| clicktrail `GET /c/demo` (full click path) | {c_wrk:,.0f}/s | {c_ld:,.0f}/s |")
print(f"| ratio clicktrail / baseline | {c_wrk / b_wrk:.0%} | {c_ld / b_ld:.0%} |")
print(f"| ratio actix-web floor / baseline | {f_wrk / b_wrk:.0%} | {f_ld / b_ld:.0%} |")
print(f"| ratio clicktrail / actix-web floor | {c_wrk / f_wrk:.0%} | {c_ld / f_ld:.0%} |")
print(f"| clicktrail-load / wrk on the baseline | | {b_ld / b_wrk:.2f}x |")
print()
print("| open loop, browser clicks | achieved | p50 | p99 | p99.9 | max | late sends | server p99 (own histogram) |")
print("|---|---|---|---|---|---|---|---|")
for rate in (10000, 20000, 40000):
    d = j(f"open-{rate}"); l = lat(d)
    print(f"| {rate:,}/s | {d['achieved_rate']:,.0f}/s | {fmt(l['p50'])} | {fmt(l['p99'])} | {fmt(l['p99.9'])} | {fmt(l['max'])} | {d['requests']['late']:,} | {server_q(rate, 0.99)} |")
print()
d = j("open-5000")
print("| agreement at 5,000/s | p50 | p99 |")
print("|---|---|---|")
print(f"| clicktrail-load corrected | {fmt(lat(d)['p50'])} | {fmt(lat(d)['p99'])} |")
print(f"| clicktrail-load uncorrected | {fmt(lat(d, corr='uncorrected')['p50'])} | {fmt(lat(d, corr='uncorrected')['p99'])} |")
print(f"| wrk, 50 connections paced to ~{wrk_rps('wrk-paced.txt'):,.0f}/s | {fmt(wrk_pct('wrk-paced.txt', 50))} | {fmt(wrk_pct('wrk-paced.txt', 99))} |")
print(f"| server's own histogram (no queueing, no network) | {server_q(5000, 0.5)} | {server_q(5000, 0.99)} |")
print()
cm, c10 = j("conv-max"), j("conv-10k")
print("| conversions, durable acknowledgement | achieved | p50 | p99 | p99.9 | errors |")
print("|---|---|---|---|---|---|")
print(f"| closed loop, 64 connections | {cm['achieved_rate']:,.0f}/s | {fmt(lat(cm)['p50'])} | {fmt(lat(cm)['p99'])} | {fmt(lat(cm)['p99.9'])} | {cm['requests']['errors']} |")
print(f"| open loop 10,000/s, 128 connections | {c10['achieved_rate']:,.0f}/s | {fmt(lat(c10)['p50'])} | {fmt(lat(c10)['p99'])} | {fmt(lat(c10)['p99.9'])} | {c10['requests']['errors']} |")
PY

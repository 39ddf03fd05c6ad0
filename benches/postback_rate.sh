#!/usr/bin/env bash
# Postback dispatch rate against a local receiver: a global postback on every conversion,
# conversions sent as fast as they are acknowledged for SECS seconds, and the receiver
# (`clicktrail-load receive`) counting what arrives from its first to its last request.
# Runs once with the default per-host limit (2 in flight) and once with 8.
#
# Usage: benches/postback_rate.sh [seconds]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}

cargo build --release --bin clicktrail -q && cargo build --release -p clicktrail-load -q
load=target/release/clicktrail-load
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
wait_ready() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done; return 1; }

for per_host in 2 8; do
  $load receive --listen 127.0.0.1:18095 --idle 3s --json "$work/recv-$per_host.json" > /dev/null 2>&1 &
  recv=$!
  sed 's/^listen = .*/listen = "127.0.0.1:18091"/' config/demo.toml > "$work/ct.toml"
  printf '\n[postbacks]\nallow-private-destinations = true\nconcurrency = 8\nper-host = %s\n' "$per_host" >> "$work/ct.toml"
  RUST_LOG=warn target/release/clicktrail serve --config "$work/ct.toml" --data-dir "$work/data-$per_host" &
  server=$!
  pids+=("$server" "$recv")
  wait_ready 18091 /readyz
  curl -s -o /dev/null -X POST -H 'authorization: Bearer demo-admin-key' \
    -d '{"id":"bench","url":"http://127.0.0.1:18095/pb?cid={conversion_id}&amt={amount}","triggers":["conversion.created"]}' \
    http://127.0.0.1:18091/api/v1/postbacks
  $load --target http://127.0.0.1:18091 --max --duration "${secs}s" --warmup 0s \
    --connections 32 --scenario conversions --quiet --json "$work/conv-$per_host.json" > /dev/null || true
  wait "$recv" || true
  kill "$server"; wait "$server" 2>/dev/null || true
  python3 - "$work" "$per_host" <<'PY'
import json, sys
work, ph = sys.argv[1], sys.argv[2]
c = json.load(open(f"{work}/conv-{ph}.json"))
r = json.load(open(f"{work}/recv-{ph}.json"))
sent = c["requests"]["answered"]
print(f"per-host {ph}: conversions acknowledged {sent} at {c['achieved_rate']:.0f}/s; "
      f"postbacks received {r['requests']} in {r['span_s']:.1f} s = {r['rate']:.0f}/s")
PY
done

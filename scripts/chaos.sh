#!/usr/bin/env bash
# Chaos run: SIGKILL the server every few seconds while clicktrail-load sends a mixed
# click, impression, conversion and refund load (open loop), restarting it on the same
# data directory each time; then check that nothing acknowledged was lost or duplicated
# (`clicktrail-load --verify`), that the ledger's trial balance sums to zero per currency,
# that the stopped journal verifies, and that no actor dead-lettered anything or was given
# up on.
#
# Bounded: it runs for SECS seconds (default 60) with a kill every KILL_EVERY seconds
# (default 3), on 127.0.0.1 only, and stops by itself. Not part of scripts/test (it takes
# a release build and a minute of load); run it before a release and after changes to the
# journal, the ingest path or the actors.
#
# Usage: scripts/chaos.sh [secs] [kill_every] [rate]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
kill_every=${2:-3}
rate=${3:-3000}
port=${CHAOS_PORT:-18191}
base="http://127.0.0.1:$port"
admin='authorization: Bearer demo-admin-key'

cargo build --release --bin clicktrail -q
cargo build --release -p clicktrail-load -q
bin=target/release/clicktrail
load=target/release/clicktrail-load
work=$(mktemp -d)
data="$work/data"
server=
loadpid=
cleanup() {
  [ -n "$server" ] && kill -9 "$server" 2>/dev/null || true
  [ -n "$loadpid" ] && kill "$loadpid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start() {
  RUST_LOG=warn "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" 2>>"$work/server.log" &
  server=$!
  for _ in $(seq 300); do
    curl -sf -o /dev/null "$base/healthz" && return 0
    sleep 0.05
  done
  echo "chaos: the server did not come back; log:" >&2
  tail -50 "$work/server.log" >&2
  exit 1
}
ready() {
  for _ in $(seq 600); do
    curl -sf -o /dev/null "$base/readyz" && return 0
    sleep 0.05
  done
  echo "chaos: the server is not ready; /readyz says:" >&2
  curl -s "$base/readyz" >&2
  exit 1
}

start
ready
# The scenario's affiliates and links, once, before the clock starts.
"$load" --target "$base" --scenario mix --setup --rate 10 --duration 1s --warmup 0s --quiet >/dev/null
"$load" --target "$base" --scenario mix --rate "$rate" --duration "${secs}s" --warmup 0s \
  --connections 32 --timeout 2s --quiet --verify "$data" --json "$work/load.json" \
  >"$work/load.out" 2>&1 &
loadpid=$!
kills=0
began=$(date +%s)
while kill -0 "$loadpid" 2>/dev/null; do
  sleep "$kill_every"
  kill -0 "$loadpid" 2>/dev/null || break
  [ $(( $(date +%s) - began )) -ge "$secs" ] && break
  kill -9 "$server"
  wait "$server" 2>/dev/null || true
  kills=$((kills + 1))
  start
done
status=0
wait "$loadpid" || status=$?
loadpid=
ready

# The ledger catches up with every conversion it can see, then the books are read.
sleep 2
trial=$(curl -sf -H "$admin" "$base/api/v1/ledger/trial-balance")
dead=$(curl -sf -H "$admin" "$base/api/v1/dead-letters")
readyz=$(curl -s "$base/readyz")
kill "$server"
wait "$server" 2>/dev/null || true
server=
# Every record of the stopped journal reads back whole.
"$bin" journal verify --data-dir "$data" >"$work/verify.out" 2>&1 || {
  echo "chaos: journal verify failed:"; cat "$work/verify.out"; status=1; }

python3 - "$work" "$trial" "$dead" "$readyz" "$kills" "$secs" "$status" <<'PY'
import json, sys
work, trial, dead, readyz, kills, secs, status = sys.argv[1:]
load = json.load(open(f"{work}/load.json"))
v = load.get("verify", {})
trial, dead, readyz = json.loads(trial), json.loads(dead), json.loads(readyz)
sums = {c["currency"]: c.get("total_minor", c.get("total")) for c in trial.get("currencies", trial if isinstance(trial, list) else [])}
balanced = all(str(t) in ("0", "0.00", "0.000") for t in sums.values())
print(f"chaos: {kills} SIGKILLs in {secs} s")
print(f"  clicks      acknowledged {v['clicks']['acknowledged']}, missing {v['clicks']['missing']}")
print(f"  conversions acknowledged {v['conversions']['acknowledged']}, missing {v['conversions']['missing']}, twice {v['conversions']['twice']}")
print(f"  reversals   acknowledged {v['reversals']['acknowledged']}, missing {v['reversals']['missing']}, twice {v['reversals']['twice']}")
print(f"  corrupt     {v.get('corrupt', [])}")
print(f"  trial balance per currency: {sums} -> {'balanced' if balanced else 'NOT BALANCED'}")
print(f"  dead letters open: {dead['open']}; ready after: {readyz['ready']}")
ok = v.get("ok") and balanced and dead["open"] == 0 and readyz["ready"] and status == "0"
print("chaos: OK" if ok else "chaos: FAILED")
sys.exit(0 if ok else 1)
PY

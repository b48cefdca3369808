#!/usr/bin/env bash
# Memory of a dram node as it is used: resident set (VmRSS of the `pocket storage` child) of an empty node, after
# filling it, and after deleting everything and waiting out the release delay. Runs each given `pocket` binary in turn
# (e.g. an older build and this one) with its own `pocket up --static --nodes 1` cluster.
#   bench/dram-memory.sh [POCKET...]            default: ./pocket
#   CAPACITY=4GiB FILL_MIB=2048 SETTLE=20 RELEASE=45 bench/dram-memory.sh OLD/pocket NEW/pocket
set -euo pipefail
capacity="${CAPACITY:-4GiB}"; fill_mib="${FILL_MIB:-2048}"; settle="${SETTLE:-20}"; release="${RELEASE:-45}"
binaries=("$@"); [ ${#binaries[@]} -gt 0 ] || binaries=("$(cd "$(dirname "$0")/.." && pwd)/pocket")
work="$(mktemp -d)"; trap 'kill "${up:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
head -c 256M /dev/urandom > "$work/object"

rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
nodes() { pgrep -P "$1" -f ' storage ' || true; }
report() { local line="$1"; for pid in $(nodes "$up"); do line+=" node $pid: $(rss_mib "$pid") MiB"; done; echo "$line  (load $(cut -d' ' -f1-3 /proc/loadavg))"; }

for bin in "${binaries[@]}"; do
  export POCKET_HOME="$work/home-$RANDOM"
  "$bin" up --static --nodes 1 --capacity "$capacity" --port 0 --controller-port 0 --no-gateway --no-metrics >"$work/up.log" 2>&1 &
  up=$!
  for _ in $(seq 600); do [ -f "$POCKET_HOME/cluster.json" ] && [ -n "$(nodes "$up")" ] && break; sleep 0.1; done
  echo "== $bin: one dram node of $capacity"
  start=$(date +%s)
  for t in 1 5 "$settle"; do sleep $((t - ($(date +%s) - start) > 0 ? t - ($(date +%s) - start) : 0)); report "empty, ${t}s after start:"; done
  job="$("$bin" job register mem --capacity "${fill_mib}MiB" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
  for i in $(seq $((fill_mib / 256))); do "$bin" put "$work/object" "$job/o$i" >/dev/null; done
  report "after putting ${fill_mib} MiB:"
  for i in $(seq $((fill_mib / 256))); do "$bin" rm "$job/o$i" >/dev/null; done
  report "right after deleting it:"
  sleep "$release"
  report "${release}s after deleting:"
  kill "$up"; wait "$up" 2>/dev/null || true; up=""
done

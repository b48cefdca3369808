#!/usr/bin/env bash
# What the Prometheus metrics cost on the hot path. Two clusters of the same build run side by side on this machine:
# "on", whose metadata server and storage nodes run with --metrics-port 0 (every request counted and timed by the
# FrameMetrics decorator, and scraped every 15 s as Prometheus would), and "off", started without --metrics-port (no
# decorator at all). Each round runs `pocket bench` (1 KiB put then get, one client) against both, alternating which
# goes first, once with 1 KiB objects inline in the metadata server (the client's default) and once through a
# storage node (--small-object-threshold 0). Prints every run, then per op the median over the rounds of on/off.
#
#   bench/metrics-overhead.sh [ROUNDS] [DURATION]      e.g. bench/metrics-overhead.sh 10 5s
#
# POCKET (default: ./pocket beside this folder) is the command that runs pocket, e.g. POCKET="dotnet /tmp/x/pocket.dll".
# Needs python3 (to read the bench's JSON).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-10}"
duration="${2:-5s}"
read -r -a pocket <<<"${POCKET:-$here/pocket}"

work="$(mktemp -d)"
token="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export POCKET_CLUSTER_TOKEN="$token"
scraper=""
cleanup() {
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null || true
  # Closing the roles' standard input stops them (--stop-on-stdin-eof).
  exec 3>&- 4>&- 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_line FILE PREFIX: prints the first line of FILE starting with PREFIX once it is there (60 s at most).
wait_line() {
  for _ in $(seq 600); do
    if line="$(grep -m1 "^$2" "$1" 2>/dev/null)"; then
      echo "$line"
      return 0
    fi
    sleep 0.1
  done
  echo "no '$2' line in $1:" >&2
  cat "$1" >&2
  return 1
}

# start_cluster NAME FD [--metrics-port 0]: a metadata server and one DRAM storage node, their stdin the fifo on FD;
# sets $address. (Not in a $(...) subshell: the fifo's writer must stay open in this shell.)
address=""
start_cluster() {
  local name="$1" fd="$2"
  shift 2
  mkfifo "$work/$name.stdin"
  # 3>&- 4>&-: a role must not hold a fifo's writer open, or it (and the others) never see their stdin close.
  "${pocket[@]}" metadata --port 0 --stop-on-stdin-eof "$@" <"$work/$name.stdin" >"$work/$name-metadata.log" 2>&1 3>&- 4>&- &
  eval "exec $fd>\"$work/$name.stdin\""
  address="$(wait_line "$work/$name-metadata.log" "POCKET-METADATA address=" | sed 's/^POCKET-METADATA address=\([^ ]*\).*/\1/')"
  "${pocket[@]}" storage --metadata "$address" --capacity 256MiB --stop-on-stdin-eof "$@" <"$work/$name.stdin" >"$work/$name-storage.log" 2>&1 3>&- 4>&- &
  wait_line "$work/$name-storage.log" "POCKET-NODE " >/dev/null
}

start_cluster on 3 --metrics-port 0
on="$address"
start_cluster off 4
off="$address"
metadata_metrics="$(wait_line "$work/on-metadata.log" "metrics: " | cut -d' ' -f2)"
storage_metrics="$(wait_line "$work/on-storage.log" "metrics: " | cut -d' ' -f2)"
echo "on:  metadata $on (metrics $metadata_metrics, node $storage_metrics)"
echo "off: metadata $off (no metrics listener, no decorator)"

# As Prometheus would: every 15 s.
(
  while true; do
    for url in "$metadata_metrics" "$storage_metrics"; do
      curl -sf -H "Authorization: Bearer $token" "$url" >/dev/null || echo "scrape of $url failed" >&2
    done
    sleep 15
  done
) 3>&- 4>&- &
scraper=$!

results="$work/results.tsv"
: >"$results"
bench() { # bench CLUSTER ADDRESS MODE ROUND
  local threshold=()
  [ "$3" = node ] && threshold=(--small-object-threshold 0)
  "${pocket[@]}" bench --metadata "$2" --size 1KiB --op put,get --duration "$duration" --warmup 1s "${threshold[@]}" --json >"$work/run.json"
  python3 - "$work/run.json" "$1" "$3" "$4" >>"$results" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))["systems"]["pocket"]
for op in ("put", "get"):
    r = run[op]
    print(f"{sys.argv[4]}\t{sys.argv[3]}\t{op}\t{sys.argv[2]}\t{r['p50_us']}\t{r['ops_per_s']}")
EOF
}

echo "load before: $(uptime)"
for round in $(seq "$rounds"); do
  for mode in inline node; do
    if [ $((round % 2)) -eq 1 ]; then order="on off"; else order="off on"; fi
    for cluster in $order; do
      if [ "$cluster" = on ]; then address="$on"; else address="$off"; fi
      bench "$cluster" "$address" "$mode" "$round"
    done
  done
  echo "round $round done: $(uptime)"
done
echo "load after: $(uptime)"

python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
runs = {}
for rnd, mode, op, cluster, p50, ops in rows:
    runs.setdefault((mode, op, rnd), {})[cluster] = (float(p50), float(ops))
print("round  mode    op   p50 on/off us   ops/s on/off      p50 on/off  ops/s on/off")
ratios = {}
for (mode, op, rnd), r in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], int(kv[0][2]))):
    (p_on, o_on), (p_off, o_off) = r["on"], r["off"]
    ratios.setdefault((mode, op), []).append((p_on / p_off, o_on / o_off))
    print(f"{rnd:>5}  {mode:6}  {op:4} {p_on:6.0f} / {p_off:<6.0f}  {o_on:7.0f} / {o_off:<7.0f}  {p_on / p_off:10.3f}  {o_on / o_off:12.3f}")
print()
print("mode    op   rounds  p50 on/off: median (min-max)   ops/s on/off: median (min-max)")
for (mode, op), rs in sorted(ratios.items()):
    p = [a for a, _ in rs]
    o = [b for _, b in rs]
    print(f"{mode:6}  {op:4} {len(rs):6}  {statistics.median(p):.3f} ({min(p):.3f}-{max(p):.3f})            {statistics.median(o):.3f} ({min(o):.3f}-{max(o):.3f})")
EOF

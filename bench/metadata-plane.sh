#!/usr/bin/env bash
# Metadata ops/s with 1 and 2 metadata servers at the same client load (issue 15): two `pocket bench` processes, each
# with CONNECTIONS/2 connections of its own (1,024 in all by default) running the metadata ops (lookup, create_delete,
# list100, count; `--op meta`), pointed at one server (1 server) or one each (2 servers). Each server is a `pocket
# metadata` process of its own; its CPU (utime + stime from /proc/PID/stat, 10 ms ticks) is read before and after the
# two benches, so CPU per op is the server's over the whole bench run (connects and warm-ups included) divided by the
# timed ops. Runs alternate 1 and 2 servers, PASSES times, so both see the same machine.
#
#   bench/metadata-plane.sh [RESULTS_DIR]
#
# Environment: CONNECTIONS (default 1024), PASSES (default 3), DURATION (per op, default 4s), WARMUP (default 1s).
# Prints one line per run and writes RESULTS_DIR/metadata-plane.txt (default ./bench-results, git-ignored).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
results="${1:-$repo/bench-results}"
connections="${CONNECTIONS:-1024}"
passes="${PASSES:-3}"
duration="${DURATION:-4s}"
warmup="${WARMUP:-1s}"
mkdir -p "$results"
out="$results/metadata-plane.txt"

dotnet build "$repo/src/Pocket.Cli" -c Release -v q -nologo >/dev/null
pocket=(dotnet "$repo/src/Pocket.Cli/bin/Release/net10.0/pocket.dll")
export POCKET_HOME
POCKET_HOME="$(mktemp -d)"
export POCKET_CLUSTER_TOKEN
POCKET_CLUSTER_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$POCKET_HOME"
}
trap cleanup EXIT

# Starts a metadata server on a free port; prints "PID ADDRESS" once it is listening.
start_metadata() {
    local log="$POCKET_HOME/metadata-$RANDOM.log"
    "${pocket[@]}" metadata --port 0 --idle-timeout 10m >"$log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do
        if grep -q '^POCKET-METADATA address=' "$log"; then
            echo "$pid $(grep -m1 '^POCKET-METADATA address=' "$log" | sed 's/^POCKET-METADATA address=\([^ ]*\).*/\1/')"
            return
        fi
        sleep 0.1
    done
    echo "metadata server did not start: $(cat "$log")" >&2
    exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
    local servers="$1" pass="$2"
    local server_pids=() addresses=()
    for _ in $(seq 1 "$servers"); do
        read -r pid address < <(start_metadata)
        pids+=("$pid")
        server_pids+=("$pid")
        addresses+=("$address")
    done

    local before=() after=()
    for pid in "${server_pids[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    local load
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    local benches=()
    for i in 0 1; do
        local address="${addresses[$((i % servers))]}"
        "${pocket[@]}" bench --metadata "$address" --connections $((connections / 2)) --op meta \
            --duration "$duration" --warmup "$warmup" --json >"$results/mplane-s$servers-p$pass-b$i.json" 2>"$results/mplane-s$servers-p$pass-b$i.log" &
        benches+=($!)
    done
    for b in "${benches[@]}"; do wait "$b"; done
    for pid in "${server_pids[@]}"; do after+=("$(cpu_ticks "$pid")"); done

    local cpu=0
    local per_server=()
    for i in "${!server_pids[@]}"; do
        local ticks=$((after[i] - before[i]))
        cpu=$((cpu + ticks))
        per_server+=("$ticks")
    done

    python3 - "$servers" "$pass" "$load" "$cpu" "${per_server[*]}" "$results"/mplane-s"$servers"-p"$pass"-b0.json "$results"/mplane-s"$servers"-p"$pass"-b1.json <<'PY' | tee -a "$out"
import json, sys
servers, run_pass, load, cpu_ticks, per_server = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
reports = [json.load(open(p)) for p in sys.argv[6:]]
ops = {}
rate = {}
for report in reports:
    system = next(iter(report["systems"].values()))
    for op, r in system.items():
        ops[op] = ops.get(op, 0) + r["ops"]
        rate[op] = rate.get(op, 0) + r["ops_per_s"]
total = sum(ops.values())
cpu_us = cpu_ticks * 10_000 / total if total else float("nan")
rates = ", ".join(f"{op} {rate[op] / 1000:.1f} K/s" for op in ["lookup", "create_delete", "list100", "count"] if op in rate)
print(f"servers={servers} pass={run_pass} load={load}: {rates}; server CPU {cpu_ticks / 100:.2f} s ({per_server.replace(' ', '+')} ticks) = {cpu_us:.1f} us/op over {total} ops")
PY

    for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

echo "# bench/metadata-plane.sh: CONNECTIONS=$connections PASSES=$passes DURATION=$duration WARMUP=$warmup, $(date -u +%FT%TZ)" | tee -a "$out"
for pass in $(seq 1 "$passes"); do
    run 1 "$pass"
    run 2 "$pass"
done

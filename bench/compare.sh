#!/usr/bin/env bash
# Pocket vs Redis, side by side in one process and one run (`pocket bench --vs`), for the sizes and client
# counts that docs/benchmarks.md reports. Absolute numbers drift on shared machines; compare the ratios.
#
#   bench/compare.sh [RESULTS_DIR]        (default ./bench-results, git-ignored)
#
# Environment: DURATION (timed run per system and op, default 10s), REDIS_PORT (default 6390).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
results="$(mkdir -p "${1:-$repo/bench-results}" && cd "${1:-$repo/bench-results}" && pwd)"
duration="${DURATION:-10s}"
redis_port="${REDIS_PORT:-6390}"
redis_url="resp://127.0.0.1:${redis_port}"

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v jq >/dev/null || missing+=(jq)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

redis_pid=""
stop_redis() {
    if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
}
trap stop_redis EXIT INT TERM

if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
    echo "port $redis_port already answers PING: stop that server or set REDIS_PORT" >&2
    exit 1
fi

# No persistence: Redis must keep everything in memory, as Pocket's DRAM tier does.
redis-server --port "$redis_port" --save "" --appendonly no --daemonize no >"$results/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null

# Built once, so no run pays for (or races with) a build.
dotnet build -c Release "$repo/src/Pocket.Cli" -nologo -v q >/dev/null

# An empty POCKET_HOME: the bench starts its own embedded cluster, never one a user left running.
export POCKET_HOME="$results/pocket-home"
unset POCKET_METADATA POCKET_CLUSTER_TOKEN
rm -rf "$POCKET_HOME"

runs=(
    "1KiB 1"
    "1KiB 16"
    "1MiB 1"
    "64MiB 1"
)
for run in "${runs[@]}"; do
    read -r size clients <<<"$run"
    out="$results/${size}-c${clients}.json"
    echo "== size $size, $clients client(s), $duration per system and op -> $out"
    dotnet run -c Release --no-build --project "$repo/src/Pocket.Cli" -- \
        bench --size "$size" --clients "$clients" --duration "$duration" --op put,get \
        --vs "redis=$redis_url" --json >"$out"
done

echo
echo "summary (ratio = pocket/redis; latency below 1 and throughput above 1 mean Pocket is faster)"
printf '%-7s %3s %-4s %9s %9s %9s %9s %10s %10s %7s %7s\n' \
    size cli op "p50 P" "p50 R" "p99 P" "p99 R" "MiB/s P" "MiB/s R" "p50 x" "tput x"
for run in "${runs[@]}"; do
    read -r size clients <<<"$run"
    jq -r --arg size "$size" --arg clients "$clients" '
        .config.ops_order[] as $op
        | [$size, $clients, $op,
           .systems.pocket[$op].p50_us, .systems.redis[$op].p50_us,
           .systems.pocket[$op].p99_us, .systems.redis[$op].p99_us,
           .systems.pocket[$op].mib_per_s, .systems.redis[$op].mib_per_s,
           .ratios.redis[$op].p50, .ratios.redis[$op].ops_per_s]
        | @tsv' "$results/${size}-c${clients}.json" |
        while IFS=$'\t' read -r s c op p50p p50r p99p p99r mp mr rp rt; do
            printf '%-7s %3s %-4s %9s %9s %9s %9s %10s %10s %7s %7s\n' "$s" "$c" "$op" "$p50p" "$p50r" "$p99p" "$p99r" "$mp" "$mr" "$rp" "$rt"
        done
done
echo
echo "JSON in $results"

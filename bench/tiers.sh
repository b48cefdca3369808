#!/usr/bin/env bash
# Pocket per storage tier: put and get of 4 KiB and 1 MiB objects, each on the bench's own cluster of two dram, ssd
# or hdd nodes (child processes; the servers' CPU per op comes from /proc).
#
#   bench/tiers.sh [RESULTS_DIR]
#
#   RESULTS_DIR    where results go (default ./bench-results/tiers, git-ignored): tier-TIER-SIZE.json, *.log, tiers.md
#
# Environment: DURATION (default 5s) and WARMUP (default 1s) per op; CLIENTS (default 1); DATA_DIR (where ssd and
# hdd nodes keep their files, default the temp directory; point it at the device to measure); POCKET (the command
# that runs pocket, default ./pocket, i.e. `dotnet run -c Release`).
# 4 KiB objects run with --small-object-threshold 0: by default objects up to 16 KiB are kept inline by the metadata
# server, whatever the tier, and would not measure the tier at all.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
fi

results="$(mkdir -p "${1:-$repo/bench-results/tiers}" && cd "${1:-$repo/bench-results/tiers}" && pwd)"
duration="${DURATION:-5s}"
warmup="${WARMUP:-1s}"
clients="${CLIENTS:-1}"
read -r -a pocket <<<"${POCKET:-$repo/pocket}"
command -v jq >/dev/null || { echo "jq is needed (apt-get install jq)" >&2; exit 1; }

# An empty POCKET_HOME: the bench starts its own cluster, never one a user left running.
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
export POCKET_HOME="$home"
unset POCKET_METADATA POCKET_CLUSTER_TOKEN

commands=()
names=()
for tier in dram ssd hdd; do
    for size in 4KiB 1MiB; do
        args=(bench --tier "$tier" --size "$size" --clients "$clients" --duration "$duration" --warmup "$warmup" --op put,get --json)
        [[ -n "${DATA_DIR:-}" && "$tier" != dram ]] && args+=(--data-dir "$DATA_DIR")
        [[ "$size" == 4KiB ]] && args+=(--small-object-threshold 0)
        name="tier-$tier-$size"
        echo "== $name: pocket ${args[*]}"
        "${pocket[@]}" "${args[@]}" >"$results/$name.json" 2>"$results/$name.log"
        names+=("$name")
        commands+=("pocket ${args[*]}")
    done
done

{
    echo "| tier | size | put p50 us | put p99 us | put ops/s | put MiB/s | get p50 us | get p99 us | get ops/s | get MiB/s | server CPU us/op put / get |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in "${names[@]}"; do
        jq -r '
            def f(x): if x == null then "-" elif x < 100 then ((x * 10 | round) / 10 | tostring) else (x | round | tostring) end;
            .systems.pocket as $p
            | "| \(.config.tier) | \(.config.size_text) | \($p.put.p50_us) | \($p.put.p99_us) | \(f($p.put.ops_per_s)) | \(f($p.put.mib_per_s)) | \($p.get.p50_us) | \($p.get.p99_us) | \(f($p.get.ops_per_s)) | \(f($p.get.mib_per_s)) | \(f($p.put.server_cpu_us_per_op)) / \(f($p.get.server_cpu_us_per_op)) |"
        ' "$results/$name.json"
    done
    echo
    echo "Commands (each on its own new cluster of 2 nodes, child processes of the bench):"
    echo
    echo '```'
    printf '%s\n' "${commands[@]}"
    echo '```'
} >"$results/tiers.md"

cat "$results/tiers.md"
echo "results in $results"

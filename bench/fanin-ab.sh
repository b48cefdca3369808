#!/usr/bin/env bash
# Before/after of a change at a fan-in: two builds of Pocket (git revisions OLD and NEW), run alternately (the order
# flips every pass, so neither always runs on the warmer or quieter machine), `pocket bench --connections N
# --processes P --op get --size 1KiB` against each build's own cluster, one line per run and a table of same-pass
# ratios NEW / OLD at the end: ops/s, p50, p99, server CPU per op, load-generator CPU per op and the connect storm's
# wall time (`fan_in.pocket.connect_ms`: every connection opened at once, before the measured requests).
#
#   bench/fanin-ab.sh OLD NEW [RESULTS_DIR]
#
#   OLD, NEW       git revisions (commits, branches, tags) of this repository
#   RESULTS_DIR    default ./bench-results/fanin-ab (git-ignored): OLD-N-PASS.json / .log, NEW-..., ab.txt
#
# Environment: FAN_IN_N (default "1024 10000"), PASSES (default 3), PROCESSES (default 2), DURATION (8s),
# WARMUP (1s). The CPU figures are less sensitive to a loaded machine than ops/s; write `uptime` beside them.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/ab-lib.sh
source "$repo/bench/ab-lib.sh"
ab_start "${BASH_SOURCE[0]}" fanin-ab "$@"

work="$(mktemp -d)"
cleanup() {
    ab_remove_checkouts "$repo" "$work"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ab_build "$repo" "$work" "$old" "$new" ab_dotnet_build

export POCKET_HOME="$work/pocket-home"
unset POCKET_METADATA POCKET_CLUSTER_TOKEN
ulimit -n "$(ulimit -Hn)"
: >"$results/ab.txt"
for pass in $(seq 1 "${PASSES:-3}"); do
    for n in ${FAN_IN_N:-1024 10000}; do
        order="old new"
        ((pass % 2 == 0)) && order="new old"
        for v in $order; do
            name="$v-$n-$pass"
            load="$(cut -d' ' -f1 /proc/loadavg)"
            # At most one process per connection (the bench refuses more): N=1 runs in one process.
            processes="${PROCESSES:-2}"
            ((processes > n)) && processes="$n"
            dotnet "$work/$v/pocket.dll" bench --connections "$n" --processes "$processes" --op get --size 1KiB \
                --duration "${DURATION:-8s}" --warmup "${WARMUP:-1s}" --json >"$results/$name.json" 2>"$results/$name.log" ||
                { echo "$name failed; its log:" >&2; tail -5 "$results/$name.log" >&2; continue; }
            jq -r --arg v "$v" --arg n "$n" --arg pass "$pass" --arg load "$load" \
                '[$pass, $n, $v, $load, (.systems.pocket.get | .ops_per_s, .p50_us, .p99_us, .server_cpu_us_per_op, .process_cpu_us_per_op),
                  (.fan_in.pocket | .connections, .refused, .connect_ms)] | map(tostring) | join(" ")' \
                "$results/$name.json" | tee -a "$results/ab.txt"
        done
    done
done

echo
echo "| N | pass | load old / new | ops/s old / new (new/old) | p50 ms (new/old) | p99 ms (new/old) | server CPU us/op (new/old) | load-generator CPU us/op (new/old) | connect ms (new/old) |"
echo "|---|---|---|---|---|---|---|---|---|"
awk '
    { key = $2 " " $1; row[key, $3] = $0; keys[key] = 1 }
    END {
        for (key in keys) {
            if (!((key, "old") in row) || !((key, "new") in row)) continue
            split(row[key, "old"], o, " "); split(row[key, "new"], w, " ")
            printf "| %s | %s | %s / %s | %.0f / %.0f (%.2fx) | %.1f / %.1f (%.2fx) | %.1f / %.1f (%.2fx) | %.1f / %.1f (%.2fx) | %.1f / %.1f (%.2fx) | %.0f / %.0f (%.2fx) |\n",
                o[2], o[1], o[4], w[4], o[5], w[5], w[5] / o[5], o[6] / 1000, w[6] / 1000, w[6] / o[6],
                o[7] / 1000, w[7] / 1000, w[7] / o[7], o[8], w[8], w[8] / o[8], o[9], w[9], w[9] / o[9],
                o[12], w[12], (o[12] > 0 ? w[12] / o[12] : 0)
        }
    }' "$results/ab.txt" | sort -t'|' -k2,2n -k3,3n

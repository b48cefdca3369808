#!/usr/bin/env bash
# Before/after of a change to a function's cold start: two builds of Pocket (git revisions OLD and NEW), run
# alternately (the order flips every pass), `pocket bench cold --runs RUNS --size SIZE --vs redis=...` of each build
# against its own cluster and one Redis started here, one line per run and a table of same-pass figures at the end:
# per phase p50 / p99 of each build, NEW / OLD, and each build's total / Redis's total of the same run.
#
#   bench/cold-ab.sh OLD NEW [RESULTS_DIR]
#
#   OLD, NEW       git revisions (commits, branches, tags) of this repository
#   RESULTS_DIR    default ./bench-results/cold-ab (git-ignored): OLD-SIZE-PASS.json / .log, NEW-..., ab.txt
#
# Environment: SIZES (default "1KiB 64KiB"), PASSES (default 2), RUNS (default 100), REDIS_PORT (default 6399).
# Each build is a ReadyToRun publish for this machine, as `./pocket` runs it. Write `uptime` beside the figures.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/ab-lib.sh
source "$repo/bench/ab-lib.sh"
ab_start "${BASH_SOURCE[0]}" cold-ab "$@"
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
port="${REDIS_PORT:-6399}"
if redis-cli -p "$port" ping >/dev/null 2>&1; then
    echo "port $port already answers PING: stop that server or set REDIS_PORT" >&2
    exit 1
fi

case "$(uname -m)" in
    x86_64) rid=linux-x64 ;;
    aarch64 | arm64) rid=linux-arm64 ;;
    *) echo "no ReadyToRun runtime identifier for $(uname -m)" >&2; exit 1 ;;
esac

work="$(mktemp -d)"
redis_pid=""
cleanup() {
    [[ -n "$redis_pid" ]] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
    ab_remove_checkouts "$repo" "$work"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ReadyToRun, as `./pocket` runs it.
publish() {
    dotnet publish "$1/src/Pocket.Cli" -c Release -r "$rid" --self-contained false -o "$2" -nologo -v q
}
ab_build "$repo" "$work" "$old" "$new" publish

redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$results/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done

export POCKET_HOME="$work/pocket-home"
unset POCKET_METADATA POCKET_CLUSTER_TOKEN
: >"$results/ab.txt"
for pass in $(seq 1 "${PASSES:-2}"); do
    for size in ${SIZES:-1KiB 64KiB}; do
        order="old new"
        ((pass % 2 == 0)) && order="new old"
        for v in $order; do
            name="$v-$size-$pass"
            load="$(cut -d' ' -f1 /proc/loadavg)"
            "$work/$v/pocket" bench cold --runs "${RUNS:-100}" --size "$size" --vs "redis=resp://127.0.0.1:$port" --json \
                >"$results/$name.json" 2>"$results/$name.log" ||
                { echo "$name failed; its log:" >&2; tail -5 "$results/$name.log" >&2; continue; }
            jq -r --arg v "$v" --arg size "$size" --arg pass "$pass" --arg load "$load" \
                '[$pass, $size, $v, $load,
                  (.systems.pocket | .connect.p50_us, .first_put.p50_us, .first_put.p99_us, .first_get.p50_us, .first_get.p99_us, .total.p50_us, .total.p99_us),
                  (.systems.redis | .first_put.p50_us, .first_get.p50_us, .total.p50_us)] | map(tostring) | join(" ")' \
                "$results/$name.json" | tee -a "$results/ab.txt"
        done
    done
done

echo
echo "| size | pass | build (load) | connect p50 | first put p50 / p99 | first get p50 / p99 | total p50 / p99 | Redis put / get / total p50 | total / Redis |"
echo "|---|---|---|---|---|---|---|---|---|"
awk '{ printf "| %s | %s | %s (%s) | %.0f | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f / %.0f | %.2fx |\n",
        $2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $10 / $14 }' "$results/ab.txt"
echo
echo "| size | pass | first put p50 new/old | first get p50 new/old | total p50 new/old | total p99 new/old |"
echo "|---|---|---|---|---|---|"
awk '
    { key = $2 " " $1; row[key, $3] = $0; keys[key] = 1 }
    END {
        for (key in keys) {
            if (!((key, "old") in row) || !((key, "new") in row)) continue
            split(row[key, "old"], o, " "); split(row[key, "new"], w, " ")
            printf "| %s | %s | %.2fx | %.2fx | %.2fx | %.2fx |\n", w[2], w[1], w[6] / o[6], w[8] / o[8], w[10] / o[10], w[11] / o[11]
        }
    }' "$results/ab.txt" | sort

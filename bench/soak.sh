#!/usr/bin/env bash
# Soak: a cluster of `pocket up` under mixed load with job churn for a long time, every role's RSS, threads and open
# file descriptors sampled; ends with a summary of growth per process and the count of failed operations.
#
#   bench/soak.sh [--minutes N] [--interval SECONDS] [RESULTS_DIR]
#
#   --minutes N     how long the load runs (default 30)
#   --interval S    seconds between samples (default 10)
#   RESULTS_DIR     where results go (default ./bench-results/soak, git-ignored): samples.csv (time, role, pid, rss_kib,
#                   threads, fds), load-*.log, churn.log, up.log and summary.md
#
# Load, all at once for the whole run: 4 clients of 1 KiB mixed put/get (inline objects, metadata server), 2 clients of
# 1 MiB mixed put/get (storage nodes) in two long-lived jobs, each as back-to-back `pocket bench --job` runs of 60 s;
# and job churn: register a job, put 16 objects of 64 KiB - 4 MiB, read each back and compare, list, deregister, again.
# Roles: `up` is the process of the metadata server, controller and gateway; `storage` each storage node (a child).
# Environment: POCKET (the command that runs pocket, default the Release build of src/Pocket.Cli, built first).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
minutes=30
interval=10
results=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --interval) interval="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) results="$1"; shift ;;
    esac
done
[[ "$minutes" =~ ^[0-9]+$ && "$minutes" -ge 1 ]] || { echo "--minutes must be a whole number of at least 1" >&2; exit 2; }
[[ "$interval" =~ ^[0-9]+$ && "$interval" -ge 1 ]] || { echo "--interval must be a whole number of at least 1" >&2; exit 2; }
results="$(mkdir -p "${results:-$repo/bench-results/soak}" && cd "${results:-$repo/bench-results/soak}" && pwd)"
command -v jq >/dev/null || { echo "jq is needed (apt-get install jq)" >&2; exit 1; }

if [[ -n "${POCKET:-}" ]]; then
    read -r -a pocket <<<"$POCKET"
else
    echo "== building the pocket command (Release)"
    dotnet build "$repo/src/Pocket.Cli" -c Release -v quiet -nologo >"$results/build.log" 2>&1 || { cat "$results/build.log" >&2; exit 1; }
    pocket=("$repo/src/Pocket.Cli/bin/Release/net10.0/pocket")
fi

# An empty POCKET_HOME: the soak runs its own cluster, never one a user left running.
home="$(mktemp -d)"
work="$(mktemp -d)"
export POCKET_HOME="$home"
unset POCKET_METADATA POCKET_CLUSTER_TOKEN POCKET_CONTROLLER
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -n "${up_pid:-}" ]] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    rm -rf "$home" "$work"
}
trap cleanup EXIT

echo "== pocket up (2 dram nodes of 512 MiB, child processes)"
"${pocket[@]}" up --nodes 2 --capacity 512MiB --port 0 --controller-port 0 --gateway-port 0 >"$results/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 600); do
    [[ -s "$home/cluster.json" ]] && break
    kill -0 "$up_pid" 2>/dev/null || { echo "pocket up ended:" >&2; cat "$results/up.log" >&2; exit 1; }
    sleep 0.2
done
[[ -s "$home/cluster.json" ]] || { echo "pocket up did not start in 120 s" >&2; exit 1; }

deadline=$(( $(date +%s) + minutes * 60 ))
register() { "${pocket[@]}" job register "$1" --capacity "$2" "${@:3}" --json | jq -r .id; }
small_job="$(register soak-small 256MiB)"
# The 1 MiB bench keeps 256 objects of 1 MiB to read and puts more while it reads: 256 MiB sizes the job, but its
# default byte quota (the capacity plus 25 %) would refuse every run after the first; the limit leaves room for both.
large_job="$(register soak-large 256MiB --max-capacity 768MiB)"

# Back-to-back bench runs in one job until the deadline; each failure is counted.
bench_loop() {
    local name="$1" job="$2" size="$3" clients="$4"
    local runs=0 failures=0
    while (( $(date +%s) + 60 < deadline )); do
        if "${pocket[@]}" bench --job "$job" --size "$size" --clients "$clients" --op mixed --duration 55s --warmup 1s --json >"$results/load-$name-last.json" 2>>"$results/load-$name.log"; then
            jq -c "{run: $runs, ops: .systems.pocket.mixed.ops_per_s, p50_us: .systems.pocket.mixed.p50_us, p99_us: .systems.pocket.mixed.p99_us}" "$results/load-$name-last.json" >>"$results/load-$name.log" 2>/dev/null || true
        else
            failures=$((failures + 1))
            echo "run $runs failed" >>"$results/load-$name.log"
        fi
        runs=$((runs + 1))
    done
    echo "$name runs=$runs failures=$failures" >"$results/load-$name.result"
}

churn_loop() {
    local cycles=0 failures=0 objects=0
    for size in 65536 262144 1048576 4194304; do head -c "$size" /dev/urandom >"$work/in-$size"; done
    while (( $(date +%s) + 10 < deadline )); do
        local ok=1 job
        job="$(register "churn-$cycles" 64MiB 2>>"$results/churn.log")" || ok=0
        if (( ok )); then
            for i in $(seq 0 15); do
                local size=$((65536 << (i % 4 * 2)))
                "${pocket[@]}" put "$work/in-$size" "$job/o$i" >>"$results/churn.log" 2>&1 || { ok=0; break; }
            done
            for i in $(seq 0 15); do
                (( ok )) || break
                local size=$((65536 << (i % 4 * 2)))
                "${pocket[@]}" get "$job/o$i" "$work/out" >>"$results/churn.log" 2>&1 && cmp -s "$work/out" "$work/in-$size" || { echo "cycle $cycles: o$i read back wrong" >>"$results/churn.log"; ok=0; }
                objects=$((objects + 1))
            done
            (( ok )) && { [[ "$("${pocket[@]}" ls "$job" --json | jq length)" == 16 ]] || { echo "cycle $cycles: list is not 16" >>"$results/churn.log"; ok=0; }; }
            "${pocket[@]}" job rm "$job" >>"$results/churn.log" 2>&1 || ok=0
        fi
        (( ok )) || failures=$((failures + 1))
        cycles=$((cycles + 1))
    done
    echo "churn cycles=$cycles failures=$failures objects_checked=$objects" >"$results/churn.result"
}

sample() {
    local now role
    now=$(date +%s)
    for p in "$up_pid" $(pgrep -P "$up_pid" || true); do
        [[ -r /proc/$p/status ]] || continue
        role=storage; [[ "$p" == "$up_pid" ]] && role=up
        awk -v t="$now" -v r="$role" -v p="$p" -v fds="$(ls /proc/"$p"/fd 2>/dev/null | wc -l)" \
            '/^VmRSS:/ {rss=$2} /^Threads:/ {th=$2} END {print t "," r "," p "," rss "," th "," fds}' "/proc/$p/status"
    done >>"$results/samples.csv"
}

echo "time,role,pid,rss_kib,threads,fds" >"$results/samples.csv"
rm -f "$results"/load-*.log "$results"/*.result "$results/churn.log"
started=$(date +%s)
echo "== load for $minutes min (jobs $small_job, $large_job, churn), sampling every ${interval}s into $results/samples.csv"
bench_loop small "$small_job" 1KiB 4 & pids+=($!)
bench_loop large "$large_job" 1MiB 2 & pids+=($!)
churn_loop & pids+=($!)
while (( $(date +%s) < deadline )); do
    sample
    kill -0 "$up_pid" 2>/dev/null || { echo "pocket up died during the soak" >&2; break; }
    sleep "$interval"
done
wait "${pids[@]}" || true
pids=()
sample
ended=$(date +%s)
up_alive=yes; kill -0 "$up_pid" 2>/dev/null || up_alive=no

{
    echo "# Soak $(date -u +%Y-%m-%dT%H:%MZ): $(( (ended - started) / 60 )) min $(( (ended - started) % 60 )) s of load"
    echo
    echo "Command: \`bench/soak.sh --minutes $minutes --interval $interval\`; load at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)."
    echo "pocket up alive at the end: $up_alive"
    echo
    cat "$results"/load-*.result "$results/churn.result" 2>/dev/null | sed 's/^/    /'
    echo
    echo "| role | pid | RSS MiB first / after 1/4 / max / last | threads first / max / last | fds first / max / last |"
    echo "|---|---:|---|---|---|"
    awk -F, 'NR > 1 {
        k = $2 "," $3
        if (!(k in first)) { order[n++] = k; first[k] = $4; tf[k] = $5; ff[k] = $6; t0[k] = $1 }
        rows[k] = rows[k] " " $1 ":" $4
        if ($4 > mx[k]) mx[k] = $4; if ($5 > tm[k]) tm[k] = $5; if ($6 > fm[k]) fm[k] = $6
        last[k] = $4; tl[k] = $5; fl[k] = $6; t1[k] = $1
    } END {
        for (i = 0; i < n; i++) {
            k = order[i]; split(k, a, ",")
            q = t0[k] + (t1[k] - t0[k]) / 4; quarter = first[k]
            m = split(rows[k], s, " ")
            for (j = 1; j <= m; j++) { split(s[j], e, ":"); if (e[1] <= q) quarter = e[2] }
            printf "| %s | %s | %.0f / %.0f / %.0f / %.0f | %d / %d / %d | %d / %d / %d |\n", a[1], a[2], first[k] / 1024, quarter / 1024, mx[k] / 1024, last[k] / 1024, tf[k], tm[k], tl[k], ff[k], fm[k], fl[k]
        }
    }' "$results/samples.csv"
} >"$results/summary.md"
cat "$results/summary.md"

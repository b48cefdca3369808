#!/usr/bin/env bash
# Pocket vs Redis vs Garnet, side by side in one process and one run (`pocket bench --vs ... --vs ...`), the
# sort of `pocket demo` through each of them and a local directory (`pocket bench sort`), Pocket per tier
# (bench/tiers.sh), plus the machine's own limits (loopback round trip and bandwidth, memory copy) measured in the
# same run, so every figure can be read as a ratio to the peers and as a fraction of what the machine can do.
#
#   bench/compare.sh [RESULTS_DIR] [--long] [--update-docs]
#
#   RESULTS_DIR    where results go (default ./bench-results, git-ignored): one JSON per workload, limits-*.json,
#                  results.json (everything), summary.md (tables, exact commands, versions), *.log (stderr)
#   --long         30 s per system and op instead of 5 s; 16 MiB, 256 MiB and 1 GiB objects; sorts of 256 MiB
#                  and 1 GiB besides 64 MiB (peak memory about 20 GiB: Pocket's two 3 GiB nodes, Garnet's 8 GiB
#                  log, Redis, and the bench's own buffers)
#   --update-docs  append summary.md to docs/benchmarks.md as a dated section
#   --fan-in       only the fan-in suite: `pocket bench --connections N --op get` (1 KiB) for N in $FAN_IN_N
#                  (default "1 64 256 1024 4096 10000"), FAN_IN_PASSES passes (default 2), Pocket/Redis/Garnet
#                  interleaved in each run, the clients spread over FAN_IN_PROCESSES load-generator processes
#                  (`--processes`, default 2; 1 keeps them in the bench process); Redis with --maxclients 20000,
#                  Garnet with --network-connection-limit 20000; warm-up 3 s unless WARMUP says otherwise;
#                  fanin-nN-pP.json, fanin-nN-pP.servers (each server's peak threads and RSS during the run,
#                  sampled from /proc every 0.5 s) and fanin.txt (one line per run); FAN_IN_RATE=R runs each
#                  bench open-loop at R ops/s offered (`--rate`: latency from each request's scheduled time, send
#                  lag and achieved rate in fanin.txt); unset, the closed loop; FAN_IN_SLICES=K splits each
#                  system's --duration into K slices taken in turn (`--slices`), so the three systems meet the
#                  same phases of the machine
#
# Environment: DURATION and WARMUP (override the per-op times), REDIS_PORT (default 6390),
# GARNET_PORT (default 6391), TOOLS (where Garnet is installed as a dotnet tool, default ./.tools, git-ignored).
# Installs what is missing: Debian redis-server, redis-tools and jq; Garnet as the garnet-server dotnet tool.
# Starts Redis and Garnet on 127.0.0.1 with persistence off and stops them on exit; each bench starts its own
# Pocket cluster (metadata server and two DRAM nodes as child processes, whose CPU is read from /proc) and stops
# it. Absolute numbers drift on shared machines: read the same-run ratios.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
long=0
update_docs=0
fan_in=0
results_arg=""
for arg in "$@"; do
    case "$arg" in
        --long) long=1 ;;
        --update-docs) update_docs=1 ;;
        --fan-in) fan_in=1 ;;
        -h | --help)
            sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "unknown option $arg (see --help)" >&2
            exit 2
            ;;
        *)
            if [[ -n "$results_arg" ]]; then
                echo "give one results directory, not '$results_arg' and '$arg'" >&2
                exit 2
            fi
            results_arg="$arg"
            ;;
    esac
done

results="$(mkdir -p "${results_arg:-$repo/bench-results}" && cd "${results_arg:-$repo/bench-results}" && pwd)"
if ((long)); then
    duration="${DURATION:-30s}"
    warmup="${WARMUP:-3s}"
else
    duration="${DURATION:-5s}"
    warmup="${WARMUP:-1s}"
fi
redis_port="${REDIS_PORT:-6390}"
garnet_port="${GARNET_PORT:-6391}"
tools="${TOOLS:-$repo/.tools}"
garnet_version="2.2.8"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
day="$(date -u +%Y-%m-%d)"

# ---- install what is missing -----------------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v jq >/dev/null || missing+=(jq)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

garnet="$tools/garnet-server"
if [[ ! -x "$garnet" ]] || ! "$garnet" --version 2>/dev/null | grep -q "^GarnetServer $garnet_version"; then
    echo "installing Garnet $garnet_version as a dotnet tool in $tools"
    dotnet tool uninstall --tool-path "$tools" garnet-server >/dev/null 2>&1 || true
    dotnet tool install --tool-path "$tools" garnet-server --version "$garnet_version" >/dev/null
fi

# ---- start the peers; stop them whatever happens -----------------------------------------------------------
redis_pid=""
garnet_pid=""
work="$(mktemp -d)"
stop() {
    local pid
    for pid in "$redis_pid" "$garnet_pid"; do
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
    done
    for pid in "$redis_pid" "$garnet_pid"; do
        if [[ -n "$pid" ]]; then
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

for port in "$redis_port" "$garnet_port"; do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
        echo "port $port already answers PING: stop that server or set REDIS_PORT / GARNET_PORT" >&2
        exit 1
    fi
done

wait_for() {
    local name="$1" port="$2" pid="$3"
    for _ in $(seq 1 150); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start on port $port; its log:" >&2
    tail -20 "$results/$name.log" >&2
    exit 1
}

# No persistence anywhere: each system keeps everything in memory, as Pocket's DRAM tier does.
redis_cmd=(redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no)
if ((fan_in)); then
    # Up to thousands of connections at once: Redis's default maxclients is 10,000 less its reserved files.
    ulimit -n "$(ulimit -Hn)"
    redis_cmd+=(--maxclients 20000)
fi
"${redis_cmd[@]}" >"$results/redis.log" 2>&1 &
redis_pid=$!
wait_for redis "$redis_port" "$redis_pid"

# Garnet keeps no AOF and takes no checkpoints unless asked (--aof, --checkpoint-freq, --storage-tier are off by
# default). Its thread pools are capped at the core count, and its log memory at 8 GiB (the default is 16 GiB;
# a record that no longer fits would be evicted, and a get would then find nothing).
garnet_cmd=("$garnet" --port "$garnet_port" --bind 127.0.0.1 --memory 8g
    --maxthreads "$(nproc)" --maxiothreads "$(nproc)" --logger-level Warning)
if ((fan_in)); then
    # Garnet accepts at most 10,000 connections by default (--network-connection-limit) and answers the next with
    # "-ERR max number of clients reached": the bench's shared connections plus 10,000 clients are more.
    garnet_cmd+=(--network-connection-limit 20000)
fi
"${garnet_cmd[@]}" >"$results/garnet.log" 2>&1 &
garnet_pid=$!
wait_for garnet "$garnet_port" "$garnet_pid"

# ---- build once, into a private directory ------------------------------------------------------------------
# So that no run pays for (or races with) a build, and a build of the source tree during the run cannot
# swap the binaries under it. Retried: another build of the same projects can hold a file for a moment.
build() {
    local project="$1" out="$2" try
    for try in 1 2 3; do
        if dotnet build -c Release "$repo/$project" -o "$out" -nologo -v q >"$work/build.log" 2>&1; then
            return 0
        fi
        echo "building $project failed (try $try of 3)" >&2
        sleep 5
    done
    cat "$work/build.log" >&2
    exit 1
}
echo "building Pocket.Cli and Pocket.Limits"
build src/Pocket.Cli "$work/pocket"
build bench/Pocket.Limits "$work/limits"
pocket=(dotnet "$work/pocket/pocket.dll")
limits=(dotnet "$work/limits/Pocket.Limits.dll")

# An empty POCKET_HOME: the bench starts its own cluster, never one a user left running.
export POCKET_HOME="$work/pocket-home"
unset POCKET_METADATA POCKET_CLUSTER_TOKEN

# Peak threads and resident memory of each server while a bench runs: Redis, Garnet and the Pocket cluster the bench
# starts (its `pocket metadata` and `pocket storage` children), summed per system, sampled every 0.5 s from /proc.
status_field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
sample_servers() {
    set +e
    local bench="$1" out="$2" system pids pid threads rss t r
    declare -A peak_threads=() peak_rss=()
    while kill -0 "$bench" 2>/dev/null; do
        for system in pocket redis garnet; do
            case "$system" in
                redis) pids="$redis_pid" ;;
                garnet) pids="$garnet_pid" ;;
                pocket) pids="$(for pid in $(pgrep -P "$bench" || true); do
                    if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qE ' (metadata|storage) '; then echo "$pid"; fi
                done)" ;;
            esac
            threads=0 rss=0
            for pid in $pids; do
                t="$(status_field "$pid" Threads)" r="$(status_field "$pid" VmRSS)"
                threads=$((threads + ${t:-0})) rss=$((rss + ${r:-0}))
            done
            if ((threads > ${peak_threads[$system]:-0})); then peak_threads[$system]=$threads; fi
            if ((rss > ${peak_rss[$system]:-0})); then peak_rss[$system]=$rss; fi
        done
        sleep 0.5
    done
    for system in pocket redis garnet; do
        echo "$system threads ${peak_threads[$system]:-0} rss_mib $((${peak_rss[$system]:-0} / 1024))"
    done >"$out"
}

if ((fan_in)); then
    : >"$results/fanin.txt"
    processes="${FAN_IN_PROCESSES:-2}"
    # At least 3 s: with 1 s the load generator was still compiling its Pocket client in Pocket's timed phase.
    fan_in_warmup="${WARMUP:-3s}"
    for pass in $(seq 1 "${FAN_IN_PASSES:-2}"); do
        for n in ${FAN_IN_N:-1 64 256 1024 4096 10000}; do
            name="fanin-n$n-p$pass"
            args=(bench --connections "$n" --op get --size 1KiB --duration "$duration" --warmup "$fan_in_warmup"
                --vs "redis=resp://127.0.0.1:$redis_port" --vs "garnet=resp://127.0.0.1:$garnet_port" --json)
            ((processes > 1 && n >= processes)) && args+=(--processes "$processes")
            [[ -n "${FAN_IN_RATE:-}" ]] && args+=(--rate "$FAN_IN_RATE")
            [[ -n "${FAN_IN_SLICES:-}" ]] && args+=(--slices "$FAN_IN_SLICES")
            echo "== $name: pocket ${args[*]} (load: $(cut -d' ' -f1-3 /proc/loadavg))"
            "${pocket[@]}" "${args[@]}" >"$results/$name.json" 2>"$results/$name.log" &
            bench_pid=$!
            sample_servers "$bench_pid" "$results/$name.servers" &
            sampler_pid=$!
            status=0
            wait "$bench_pid" || status=$?
            wait "$sampler_pid" || true
            if ((status != 0)); then
                echo "$name failed (exit $status); its log:" >&2
                tail -5 "$results/$name.log" >&2
                continue
            fi
            jq -r --arg name "$name" --arg servers "$(tr '\n' ';' <"$results/$name.servers")" \
                '$name + ": " + ([.systems | to_entries[] | "\(.key) \(.value.get.ops_per_s) ops/s p50 \(.value.get.p50_us) us p99 \(.value.get.p99_us) us cpu \(.value.get.server_cpu_us_per_op) us/op slowest client \(if .value.get.client_ops then "\(.value.get.client_ops.min_of_mean)x" else "-" end)\(if .value.get.offered_ops_per_s then " offered \(.value.get.offered_ops_per_s) (\(.value.get.achieved_of_offered)x) send lag p99 \(.value.get.send_lag_p99_us) us\(if .value.get.below_offered then " BELOW OFFERED" else "" end)" else "" end)"] | join("; "))
                + " | " + ([.fan_in | to_entries[] | "\(.key) \(.value.connections) conn in \(.value.connect_ms) ms, \(.value.refused) refused, \(.value.failed) failed"] | join("; "))
                + " | peak " + $servers' \
                "$results/$name.json" | tee -a "$results/fanin.txt"
        done
    done
    exit 0
fi

# ---- versions ----------------------------------------------------------------------------------------------
jq -n \
    --arg redis "$(redis-server --version)" \
    --arg garnet "$("$garnet" --version 2>&1 | head -1)" \
    --arg dotnet "$(dotnet --version)" \
    --arg kernel "$(uname -r)" \
    --arg nproc "$(nproc)" \
    --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    --arg commit "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo '+uncommitted changes')" \
    '{redis: $redis, garnet: $garnet, dotnet_sdk: $dotnet, kernel: $kernel, nproc: ($nproc | tonumber), cpu: $cpu, pocket_commit: $commit}' \
    >"$results/versions.json"

# ---- the machine's limits, before and after the suite ------------------------------------------------------
echo "== machine limits (before)"
"${limits[@]}" >"$results/limits-before.json"

# SIZE CLIENTS OPS [EXTRA BENCH ARGUMENTS]. A 1 GiB run gets 3 GiB nodes rather than the default 4 GiB (four
# objects' worth): enough for the one object of each round and the one it reads, and the whole suite stays
# within 24 GiB of memory.
runs=(
    "1KiB 1 put,get"
    "1KiB 16 put,get"
    "1MiB 1 put,get"
    "64MiB 1 put,get"
    "0 1 meta"
    "0 16 meta"
)
sorts=(64MiB)
if ((long)); then
    runs+=("16MiB 1 put,get" "256MiB 1 put,get" "1GiB 1 put,get --node-capacity 3GiB")
    sorts+=(256MiB 1GiB)
fi

# A command as it would be typed: words quoted only where the shell needs it (so --save "" stays visible).
shell_words() {
    local word out=()
    for word in "$@"; do
        if [[ -z "$word" ]]; then
            out+=('""')
        elif [[ "$word" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            out+=("$word")
        else
            out+=("$(printf '%q' "$word")")
        fi
    done
    echo "${out[*]}"
}

commands=()
names=()
for run in "${runs[@]}"; do
    read -r size clients ops extra <<<"$run"
    read -r -a extra_args <<<"${extra:-}"
    if [[ "$ops" == meta ]]; then
        name="meta-c${clients}"
        size_args=()
    else
        name="${size}-c${clients}"
        size_args=(--size "$size")
    fi
    args=(bench "${size_args[@]}" --clients "$clients" --duration "$duration" --warmup "$warmup" --op "$ops"
        --vs "redis=resp://127.0.0.1:$redis_port" --vs "garnet=resp://127.0.0.1:$garnet_port" "${extra_args[@]}" --json)
    echo "== $name: pocket ${args[*]}"
    "${pocket[@]}" "${args[@]}" >"$results/$name.json" 2>"$results/$name.log"
    names+=("$name")
    commands+=("pocket $(shell_words "${args[@]}")")
done

# The sort of `pocket demo`, same records (fixed seed) and functions through every store, one after another.
sort_names=()
sort_commands=()
for size in "${sorts[@]}"; do
    name="sort-$size"
    args=(bench sort --store pocket,redis,garnet,dir --size "$size" --seed 42
        --resp "redis=resp://127.0.0.1:$redis_port" --resp "garnet=resp://127.0.0.1:$garnet_port" --json)
    echo "== $name: pocket ${args[*]}"
    "${pocket[@]}" "${args[@]}" >"$results/$name.json" 2>"$results/$name.log"
    sort_names+=("$name")
    sort_commands+=("pocket $(shell_words "${args[@]}")")
done

# Pocket per tier (4 KiB and 1 MiB put/get on dram, ssd and hdd nodes); ssd/hdd files in the temp directory
# unless DATA_DIR says where.
echo "== tiers: bench/tiers.sh"
DURATION="$duration" WARMUP="$warmup" POCKET="${pocket[*]}" "$repo/bench/tiers.sh" "$results/tiers" >"$results/tiers.log" 2>&1

echo "== machine limits (after)"
"${limits[@]}" >"$results/limits-after.json"
finished="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# ---- results.json: everything in one file ------------------------------------------------------------------
{
    printf '{"started_utc": "%s", "finished_utc": "%s", "duration": "%s", "warmup": "%s",\n' "$started" "$finished" "$duration" "$warmup"
    printf '"servers": {"redis": %s, "garnet": %s},\n' \
        "$(jq -Rn --arg c "$(shell_words "${redis_cmd[@]}")" '$c')" \
        "$(jq -Rn --arg c "$(shell_words "${garnet_cmd[@]}" | sed "s|^$tools/||")" '$c')"
    printf '"versions": %s,\n' "$(cat "$results/versions.json")"
    printf '"limits_before": %s, "limits_after": %s,\n' "$(cat "$results/limits-before.json")" "$(cat "$results/limits-after.json")"
    printf '"workloads": {'
    for i in "${!names[@]}"; do
        ((i)) && printf ','
        printf '"%s": {"command": %s, "result": %s}' "${names[$i]}" "$(jq -Rn --arg c "${commands[$i]}" '$c')" "$(cat "$results/${names[$i]}.json")"
    done
    printf '},\n"sorts": {'
    for i in "${!sort_names[@]}"; do
        ((i)) && printf ','
        printf '"%s": {"command": %s, "result": %s}' "${sort_names[$i]}" "$(jq -Rn --arg c "${sort_commands[$i]}" '$c')" "$(cat "$results/${sort_names[$i]}.json")"
    done
    printf '},\n"tiers": {'
    first=1
    for file in "$results"/tiers/tier-*.json; do
        ((first)) || printf ','
        first=0
        printf '"%s": %s' "$(basename "$file" .json)" "$(cat "$file")"
    done
    printf '}}\n'
} | jq . >"$results/results.json"

# ---- summary.md --------------------------------------------------------------------------------------------
jq -r --arg day "$day" --arg invocation "bench/compare.sh $*" '
    def n(x): if x == null then "-" else (x | tostring) end;
    def r(x): if x == null then "-" else ((x * 100 | round) / 100 | tostring) + "x" end;
    def f1(x): if x == null then "-" else ((x * 10 | round) / 10 | tostring) end;
    def f0(x): if x == null then "-" elif x < 100 then ((x * 100 | round) / 100 | tostring) else (x | round | tostring) end;
    def rows: .workloads | to_entries[] | .key as $w | .value.result as $r
        | $r.config.ops_order[] | {w: $w, op: ., s: $r.systems, ra: $r.ratios};
    "## Pocket vs Redis vs Garnet (\($day))",
    "",
    "Run by `\($invocation)` from \(.started_utc) to \(.finished_utc): \(.duration) timed per system and op after a \(.warmup) warm-up, systems interleaved per op (pocket, redis, garnet) in one bench process.",
    "Each bench starts its own Pocket cluster: the metadata server and 2 DRAM nodes (pre-faulted before timing) as child processes of the bench, so Pocket CPU/op is those server processes alone, from /proc (10 ms ticks); Redis CPU comes from `INFO cpu`, Garnet CPU from /proc (10 ms ticks). Metadata ops use 0-byte objects (mapping below).",
    "",
    "Versions: \(.versions.redis | split(" ")[0:3] | join(" ")); \(.versions.garnet); .NET SDK \(.versions.dotnet_sdk); kernel \(.versions.kernel); \(.versions.nproc) cores (\(.versions.cpu)); Pocket \(.versions.pocket_commit).",
    "",
    "Servers: `\(.servers.redis)`; `\(.servers.garnet)`.",
    "",
    "### Machine limits (same run, `bench/Pocket.Limits`, before / after the suite)",
    "",
    "| limit | before | after |",
    "|---|---:|---:|",
    "| loopback round trip, 1-byte ping-pong, p50 / p99 (us) | \(.limits_before.loopback_round_trip.p50_us) / \(.limits_before.loopback_round_trip.p99_us) | \(.limits_after.loopback_round_trip.p50_us) / \(.limits_after.loopback_round_trip.p99_us) |",
    "| loopback TCP, one stream, 1 MiB writes (GB/s) | \(.limits_before.loopback_stream.gb_per_s) | \(.limits_after.loopback_stream.gb_per_s) |",
    "| memcpy 256 MiB, pre-touched, median (GB/s) | \(.limits_before.memcpy.median_gb_per_s) | \(.limits_after.memcpy.median_gb_per_s) |",
    "",
    "### Latency (us) and Pocket/peer ratios (below 1: Pocket faster)",
    "",
    "| workload | op | pocket p50 | redis p50 | garnet p50 | pocket p99 | redis p99 | garnet p99 | p50 P/R | p50 P/G | p99 P/R | p99 P/G |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    (rows | "| \(.w) | \(.op) | \(n(.s.pocket[.op].p50_us)) | \(n(.s.redis[.op].p50_us)) | \(n(.s.garnet[.op].p50_us)) | \(n(.s.pocket[.op].p99_us)) | \(n(.s.redis[.op].p99_us)) | \(n(.s.garnet[.op].p99_us)) | \(r(.ra.redis[.op].p50)) | \(r(.ra.garnet[.op].p50)) | \(r(.ra.redis[.op].p99)) | \(r(.ra.garnet[.op].p99)) |"),
    "",
    "### Throughput, CPU per op, and Pocket/peer throughput ratios (above 1: Pocket faster)",
    "",
    "| workload | op | pocket ops/s | redis ops/s | garnet ops/s | pocket MiB/s | redis MiB/s | garnet MiB/s | tput P/R | tput P/G | CPU us/op P / R / G |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    (rows | "| \(.w) | \(.op) | \(f0(.s.pocket[.op].ops_per_s)) | \(f0(.s.redis[.op].ops_per_s)) | \(f0(.s.garnet[.op].ops_per_s)) | \(f1(.s.pocket[.op].mib_per_s)) | \(f1(.s.redis[.op].mib_per_s)) | \(f1(.s.garnet[.op].mib_per_s)) | \(r(.ra.redis[.op].ops_per_s)) | \(r(.ra.garnet[.op].ops_per_s)) | \(f1(.s.pocket[.op].server_cpu_us_per_op)) / \(f1(.s.redis[.op].server_cpu_us_per_op)) / \(f1(.s.garnet[.op].server_cpu_us_per_op)) |"),
    "",
    "Metadata ops, as each system runs them:",
    "",
    ([.workloads[].result.config.meta_ops // empty] | first // {} | to_entries[] | select(.value | type == "object")
        | "- `\(.key)`: Pocket \(.value.pocket); Redis and Garnet \(.value.resp)."),
    "",
    "### Sort of `pocket demo` through each store (job = map + reduce; P/store below 1: Pocket faster)",
    "",
    "Same records (seed 42), same map and reduce functions (tasks in the bench process), stores one after another; server CPU over the whole sort (generate to verify).",
    "",
    "| sort | store | job s | map s | reduce s | generate s | verify s | bytes through the store | server CPU s | job P/store | verified |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    (.sorts | to_entries[] | .key as $w | .value.result as $r | $r.config.stores_order[] as $s | $r.stores[$s] as $x
        | "| \($w) | \($s) | \(f0($x.job_seconds)) | \(f0($x.phases.map.seconds)) | \(f0($x.phases.reduce.seconds)) | \(f0($x.phases.generate.seconds)) | \(f0($x.phases.verify.seconds)) | \($x.bytes_moved) | \(f1($x.server_cpu_s)) | \(if $s == "pocket" then "-" else r($r.ratios[$s].job_seconds) end) | \($x.verified) |"),
    "",
    "Commands (`pocket` is `dotnet pocket.dll` built by the script from src/Pocket.Cli, Release):",
    "",
    "```",
    $invocation,
    (.workloads | to_entries[] | .value.command),
    (.sorts | to_entries[] | .value.command),
    "```"
' "$results/results.json" >"$results/summary.md"
{
    echo
    echo "### Tiers (bench/tiers.sh, same run)"
    echo
    cat "$results/tiers/tiers.md"
} >>"$results/summary.md"

if ((update_docs)); then
    { echo; cat "$results/summary.md"; } >>"$repo/docs/benchmarks.md"
    echo "appended to docs/benchmarks.md"
fi

echo
cat "$results/summary.md"
echo
echo "results in $results"

#!/usr/bin/env bash
# Where a fan-in request waits for a CPU: `pocket bench --connections N --processes P --op get --size 1KiB` against its
# own cluster and a redis-server of its own, and while each system's timed phase runs, `perf sched record` of the whole
# machine for a few seconds. Per system, one row per kind of thread (the metadata server's loops, the load generator's
# client loops, redis-server, the runtime's JIT and pool threads, everything else on the machine): CPU time, wake-ups
# and the run-queue delay of each wake-up (from being woken to running: p50, p90, p99, max), so a server that waits
# for a core is told apart from one that is slow when it runs.
#
#   bench/fanin-sched.sh [BUILD_DIR] [RESULTS_DIR]
#
#   BUILD_DIR      a built CLI (pocket.dll); default: this checkout's Release build (built when missing)
#   RESULTS_DIR    default ./bench-results/fanin-sched (git-ignored): bench.json/.log, sched-SYSTEM.data/.txt, ps-SYSTEM.txt
#
# Environment: N (default 64), PROCESSES (2), DURATION (8s), WARMUP (1s), WINDOW (seconds recorded per phase, 3),
# REDIS_PORT (16379); any other environment (say DOTNET_ or POCKET_ variables) reaches the bench and its cluster.
# Needs perf (Debian linux-perf) and root or perf_event_paranoid <= -1.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-}"
results="$(mkdir -p "${2:-$repo/bench-results/fanin-sched}" && cd "${2:-$repo/bench-results/fanin-sched}" && pwd)"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
if [[ -z "$build" ]]; then
    build="$repo/src/Pocket.Cli/bin/Release/net10.0"
    [[ -f "$build/pocket.dll" ]] || dotnet build -c Release "$repo/src/Pocket.Cli" -nologo -v q >/dev/null
fi

port="${REDIS_PORT:-16379}" window="${WINDOW:-3}" n="${N:-64}" processes="${PROCESSES:-2}"
((processes > n)) && processes="$n"
rm -f "$results"/sched-* "$results"/ps-*
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --maxclients 20000 >"$results/redis.log" 2>&1 &
redis_pid=$!
bench_pid=""
cleanup() {
    [[ -n "$bench_pid" ]] && kill "$bench_pid" 2>/dev/null || true
    kill "$redis_pid" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done

export POCKET_HOME="$results/pocket-home"
unset POCKET_METADATA POCKET_CLUSTER_TOKEN
ulimit -n "$(ulimit -Hn)"
dotnet "$build/pocket.dll" bench --connections "$n" --processes "$processes" --op get --size 1KiB \
    --duration "${DURATION:-8s}" --warmup "${WARMUP:-1s}" --vs "redis=resp://127.0.0.1:$port" --json \
    >"$results/bench.json" 2>"$results/bench.log" &
bench_pid=$!

# Each system's phase is recorded once it says it is measuring, a second in (the phase's first requests are not
# its steady state); the process list taken then names each pid's role.
recorded=""
while kill -0 "$bench_pid" 2>/dev/null; do
    system="$(grep -o '^[a-z]* get: measuring' "$results/bench.log" | tail -1 | cut -d' ' -f1 || true)"
    if [[ -n "$system" && " $recorded " != *" $system "* ]]; then
        recorded="$recorded $system"
        sleep 1
        ps -eo pid=,args= >"$results/ps-$system.txt"
        echo "load $(cut -d' ' -f1 /proc/loadavg)" >>"$results/ps-$system.txt"
        perf sched record -a -o "$results/sched-$system.data" -- sleep "$window" >/dev/null 2>&1 || true
    fi
    sleep 0.2
done
wait "$bench_pid" || { echo "the bench failed; its log:" >&2; tail -5 "$results/bench.log" >&2; exit 1; }
bench_pid=""

grep "ops/s" "$results/bench.log" || true
for data in "$results"/sched-*.data; do
    system="$(basename "$data" .data | cut -d- -f2)"
    perf sched timehist -i "$data" >"$results/sched-$system.txt" 2>/dev/null
    python3 - "$system" "$results/sched-$system.txt" "$results/ps-$system.txt" "$redis_pid" <<'EOF'
import collections, re, sys

system, timehist, ps, redis = sys.argv[1:5]
roles, load = {}, "?"
for line in open(ps):
    if line.startswith("load "):
        load = line.split()[1]
        continue
    pid, _, args = line.strip().partition(" ")
    if pid == redis:
        roles[pid] = "redis"
    elif " bench worker" in args:
        roles[pid] = "load generator"
    elif " metadata " in args or args.endswith(" metadata"):
        roles[pid] = "metadata"
    elif " storage " in args or args.endswith(" storage"):
        roles[pid] = "storage"
    elif " bench " in args:
        roles[pid] = "bench"

delays, runs = collections.defaultdict(list), collections.Counter()
row = re.compile(r"\s*[\d.]+\s+\[\d+\]\s+(.+?)\[(\d+)(?:/(\d+))?\]\s+[\d.]+\s+([\d.]+)\s+([\d.]+)")
for line in open(timehist):
    m = row.match(line)
    if not m:
        continue
    name, pid = re.sub(r"\d+$", "N", m.group(1).strip()), m.group(3) or m.group(2)
    role = roles.get(pid)
    key = f"{role}: {name}" if role else "rest of the machine"
    delays[key].append(float(m.group(4)))
    runs[key] += float(m.group(5))

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]

print(f"\n{system}'s timed phase (load {load}): run-queue delay per wake-up, ms")
print("| threads | CPU ms | wake-ups | p50 | p90 | p99 | max |")
print("|---|---|---|---|---|---|---|")
for key in sorted(delays, key=lambda k: (k == "rest of the machine", -runs[k])):
    if runs[key] < 5 and key != "rest of the machine":
        continue
    d = delays[key]
    print(f"| {key} | {runs[key]:.0f} | {len(d)} | {pct(d, 50):.3f} | {pct(d, 90):.3f} | {pct(d, 99):.3f} | {max(d):.3f} |")
EOF
done

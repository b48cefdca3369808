#!/usr/bin/env bash
# Where a fan-in load generator's CPU goes: `pocket bench --connections N --processes P --op get --size 1KiB` against
# its own cluster and a redis-server of its own, and while each system's timed phase runs, `perf stat` on every bench
# worker process for a few seconds: CPU per op and system calls per op (sendto, recvfrom, epoll_ctl, epoll_wait,
# futex), one line per worker, so Pocket's client and the raw RESP client are compared in the same run, then per
# kind of thread of each worker its CPU, context switches and wake-ups made per op. The workers are the bench's own
# children; with PROCESSES=1 the bench process itself. With RECORD=1 also `perf record -g` per worker (JIT symbols resolved), for `perf report -i FILE --no-children --sort
# dso,symbol`.
#
#   bench/fanin-profile.sh [BUILD_DIR] [RESULTS_DIR]
#
#   BUILD_DIR      a built CLI (pocket.dll); default: this checkout's Release build (built when missing)
#   RESULTS_DIR    default ./bench-results/fanin-profile (git-ignored)
#
# Environment: N (default 1024), PROCESSES (2), DURATION (10s), WINDOW (seconds of perf per phase, 4),
# REDIS_PORT (16379), RECORD (0). Needs perf (Debian linux-perf) and root or perf_event_paranoid <= 0.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-}"
results="$(mkdir -p "${2:-$repo/bench-results/fanin-profile}" && cd "${2:-$repo/bench-results/fanin-profile}" && pwd)"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
if [[ -z "$build" ]]; then
    build="$repo/src/Pocket.Cli/bin/Release/net10.0"
    [[ -f "$build/pocket.dll" ]] || dotnet build -c Release "$repo/src/Pocket.Cli" -nologo -v q >/dev/null
fi

port="${REDIS_PORT:-16379}" window="${WINDOW:-4}"
rm -f "$results"/stat-* "$results"/threads-* "$results"/perf-*
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

export POCKET_HOME="$results/pocket-home" DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0
unset POCKET_METADATA POCKET_CLUSTER_TOKEN
ulimit -n "$(ulimit -Hn)"
dotnet "$build/pocket.dll" bench --connections "${N:-1024}" --processes "${PROCESSES:-2}" --op get --size 1KiB \
    --duration "${DURATION:-10s}" --warmup 1s --vs "redis=resp://127.0.0.1:$port" --json >"$results/bench.json" 2>"$results/bench.log" &
bench_pid=$!

# Each system's workers run only while its phase does: start perf once the phase says it is measuring.
events='syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_futex,task-clock'
# Per thread: which threads run per op, how often they sleep (a context switch) and whom they wake (sched_wakeup is
# counted on the waker's side).
thread_events='task-clock,context-switches,cpu-migrations,sched:sched_wakeup,syscalls:sys_enter_futex'
profiled=""
while kill -0 "$bench_pid" 2>/dev/null; do
    system="$(grep -o '^[a-z]* get: measuring' "$results/bench.log" | tail -1 | cut -d' ' -f1 || true)"
    if [[ -n "$system" && " $profiled " != *" $system "* ]]; then
        profiled="$profiled $system"
        sleep 2
        pids=()
        # This bench's own workers (its children: another bench on the machine has workers too); with PROCESSES=1 the
        # bench runs its clients itself, and then it is the one worker.
        workers="$(pgrep -P "$bench_pid" -f "pocket.dll bench worker" || true)"
        for worker in ${workers:-$bench_pid}; do
            echo "$worker $(cut -d' ' -f1 /proc/loadavg)" >"$results/stat-$system-$worker.load"
            perf stat -e "$events" -p "$worker" -o "$results/stat-$system-$worker.txt" -- sleep "$window" >/dev/null 2>&1 &
            pids+=($!)
            perf stat --per-thread -e "$thread_events" -p "$worker" -o "$results/threads-$system-$worker.txt" -- sleep "$window" >/dev/null 2>&1 &
            pids+=($!)
            if [[ "${RECORD:-0}" == 1 ]]; then
                perf record -F 999 -g -p "$worker" -o "$results/perf-$system-$worker.data" -- sleep "$window" >/dev/null 2>&1 &
                pids+=($!)
            fi
        done
        ((${#pids[@]})) && wait "${pids[@]}" || true
    fi
    sleep 0.2
done
wait "$bench_pid" || { echo "the bench failed; its log:" >&2; tail -5 "$results/bench.log" >&2; exit 1; }
bench_pid=""

grep "ops/s" "$results/bench.log" || true
printf '| system | worker | load | ops in window | CPU us/op | sendto/op | recvfrom/op | epoll_ctl/op | epoll_wait/op | futex/op |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for f in "$results"/stat-*.txt; do
    name="$(basename "$f" .txt)"; system="$(cut -d- -f2 <<<"$name")"; worker="$(cut -d- -f3 <<<"$name")"
    load="$(cut -d' ' -f2 "$results/$name.load")"
    tr -d ',' <"$f" | awk -v s="$system" -v w="$worker" -v l="$load" '
        /sys_enter_sendto/ {send=$1} /sys_enter_recvfrom/ {recv=$1} /sys_enter_epoll_wait/ {wait=$1}
        /sys_enter_epoll_ctl/ {ctl=$1} /sys_enter_futex/ {futex=$1} /task-clock/ {ms=$1}
        END { if (send > 0) printf "| %s | %s | %s | %d | %.1f | 1.00 | %.2f | %.2f | %.3f | %.3f |\n", s, w, l, send, ms*1000/send, recv/send, ctl/send, wait/send, futex/send }'
done

# Per kind of thread (the name without its id; `perf stat --per-thread` truncates names to 15 characters): CPU, context
# switches and wake-ups it made (sched_wakeup on the waker's side: a send that wakes a server's sleeping loop counts
# here) per op, ops being the worker's sendto calls in the same window.
printf '\n| system | worker | thread | threads | CPU us/op | context switches/op | wake-ups made/op | futex/op |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for f in "$results"/threads-*.txt; do
    name="$(basename "$f" .txt)"; system="$(cut -d- -f2 <<<"$name")"; worker="$(cut -d- -f3 <<<"$name")"
    ops="$(tr -d ',' <"$results/stat-$system-$worker.txt" | awk '/sys_enter_sendto/ {print $1}')"
    # "  pocket client l-12262   1640.61 msec task-clock  # ..." -> "pocket client l|12262|1640.61|task-clock"
    tr -d ',' <"$f" | sed -nE 's/^ *(.*)-([0-9]+) +([0-9.]+) +(msec +)?([a-z_:-]+).*/\1|\2|\3|\5/p' |
        awk -F'|' -v s="$system" -v w="$worker" -v ops="${ops:-0}" '
        {
            name = $1
            if ($4 == "task-clock") { cpu[name] += $3; threads[name]++ }
            else if ($4 == "context-switches") cs[name] += $3
            else if ($4 == "sched:sched_wakeup") wake[name] += $3
            else if ($4 == "syscalls:sys_enter_futex") futex[name] += $3
        }
        END {
            if (ops == 0) exit
            for (name in cpu) if (cpu[name] * 1000 / ops >= 0.05)
                printf "| %s | %s | %s | %d | %.2f | %.3f | %.3f | %.4f |\n", s, w, name, threads[name], cpu[name] * 1000 / ops, cs[name] / ops, wake[name] / ops, futex[name] / ops
        }'
done

#!/usr/bin/env bash
# Process start to first put and get: `pocket put FILE JOB/KEY` and `pocket get JOB/KEY -` of a 1 KiB file, each a
# fresh process (as a function that shells out to the CLI), timed whole (wall, user + system CPU). Two builds of the
# CLI from this working tree run alternately against one `pocket up` cluster: a plain `dotnet build` (JIT compiles
# at start) and the RID-specific publish with ReadyToRun that ./pocket makes. A table of medians and same-pass
# ratios (ready-to-run / jit) at the end.
#
#   bench/cli-start.sh [RESULTS_DIR]
#
#   RESULTS_DIR    default ./bench-results/cli-start (git-ignored): runs.txt (one line per process), table.txt
#
# Environment: PASSES (default 2), ROUNDS per pass (default 10). Wall time swings with the load of the machine;
# the CPU figures less so. Write `uptime` beside them.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
results="$(mkdir -p "${1:-$repo/bench-results/cli-start}" && cd "${1:-$repo/bench-results/cli-start}" && pwd)"
passes="${PASSES:-2}" rounds="${ROUNDS:-10}"
case "$(uname -m)" in
    x86_64) rid=linux-x64 ;;
    aarch64 | arm64) rid=linux-arm64 ;;
    *) echo "cli-start.sh: no ReadyToRun runtime identifier for $(uname -m)" >&2; exit 2 ;;
esac

work="$(mktemp -d)"
up=""
cleanup() {
    if [[ -n "$up" ]]; then
        kill -INT "$up" 2>/dev/null || true
        wait "$up" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building jit (dotnet build) and ready-to-run (dotnet publish -r $rid) into $work"
dotnet build -c Release "$repo/src/Pocket.Cli" -o "$work/jit" -nologo -v q >"$work/build-jit.log" 2>&1 ||
    { cat "$work/build-jit.log" >&2; exit 1; }
dotnet publish -c Release -r "$rid" --self-contained false "$repo/src/Pocket.Cli" -o "$work/ready-to-run" -nologo -v q \
    >"$work/build-r2r.log" 2>&1 || { cat "$work/build-r2r.log" >&2; exit 1; }

export POCKET_HOME="$work/pocket-home"
unset POCKET_METADATA POCKET_CLUSTER_TOKEN
"$work/jit/pocket" up --port 0 --controller-port 0 --gateway-port 0 --no-metrics --static >"$work/up.log" 2>&1 &
up=$!
for _ in $(seq 1 120); do
    [[ -f "$POCKET_HOME/cluster.json" ]] && break
    kill -0 "$up" 2>/dev/null || { cat "$work/up.log" >&2; exit 1; }
    sleep 0.5
done
[[ -f "$POCKET_HOME/cluster.json" ]] || { echo "pocket up did not start" >&2; cat "$work/up.log" >&2; exit 1; }
"$work/jit/pocket" job register cli-start >/dev/null
job="$(sed -n 's/.*"id": "\(cli-start[^"]*\)".*/\1/p' "$POCKET_HOME/jobs.json" | head -1)"
head -c 1024 /dev/urandom >"$work/object"

: >"$results/runs.txt"
for pass in $(seq 1 "$passes"); do
    echo "pass $pass: load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$results/runs.txt"
    order=(jit ready-to-run)
    ((pass % 2 == 0)) && order=(ready-to-run jit)
    for round in $(seq 1 "$rounds"); do
        for v in "${order[@]}"; do
            key="$job/start-$pass-$round-$v"
            /usr/bin/time -f "$pass $v put %e %U %S" -a -o "$results/runs.txt" "$work/$v/pocket" put "$work/object" "$key" >/dev/null
            /usr/bin/time -f "$pass $v get %e %U %S" -a -o "$results/runs.txt" "$work/$v/pocket" get "$key" - >/dev/null
        done
    done
done
echo "end: load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$results/runs.txt"

python3 - "$results/runs.txt" <<'EOF' | tee "$results/table.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l[:1].isdigit()]
print("| pass | verb | wall p50 jit / ready-to-run (s) | ratio | CPU p50 jit / ready-to-run (s) | ratio |")
print("|---|---|---|---|---|---|")
for p in sorted({r[0] for r in rows}):
    for verb in ("put", "get"):
        def pick(v, f):
            return statistics.median(f(r) for r in rows if r[0] == p and r[1] == v and r[2] == verb)
        wall = [pick(v, lambda r: float(r[3])) for v in ("jit", "ready-to-run")]
        cpu = [pick(v, lambda r: float(r[4]) + float(r[5])) for v in ("jit", "ready-to-run")]
        print(f"| {p} | {verb} | {wall[0]:.3f} / {wall[1]:.3f} | {wall[1] / wall[0]:.2f}x | {cpu[0]:.3f} / {cpu[1]:.3f} | {cpu[1] / cpu[0]:.2f}x |")
EOF

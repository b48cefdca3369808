#!/usr/bin/env bash
# Coverage-guided fuzzing of every protocol decoder with AFL++ and SharpFuzz.
#
#   fuzz/run-afl.sh [--minutes N] [OUT_DIR]
#
#   --minutes N   how long afl-fuzz runs (default 60)
#   OUT_DIR       afl-fuzz's output (default ./bench-results/fuzz, git-ignored); fuzzer_stats there has execs_done,
#                 saved_crashes and the rest; a crash is a file under OUT_DIR/default/crashes: copy it into
#                 fuzz/findings once fixed, and the test suite replays it from then on.
#
# Installs what it needs when missing: Debian's afl++ (apt-get) and the SharpFuzz.CommandLine dotnet tool, which
# instruments Pocket.Protocol.dll in a copy of the harness's build (the build in the tree stays uninstrumented).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
minutes=60
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) out="$1"; shift ;;
    esac
done
[[ "$minutes" =~ ^[0-9]+$ && "$minutes" -ge 1 ]] || { echo "--minutes must be a whole number of at least 1" >&2; exit 2; }
out="${out:-$repo/bench-results/fuzz}"

command -v afl-fuzz >/dev/null || { echo "== installing afl++"; DEBIAN_FRONTEND=noninteractive apt-get install -y afl++ >/dev/null; }
tools="$repo/bench-results/tools"
[[ -x "$tools/sharpfuzz" ]] || { echo "== installing SharpFuzz.CommandLine"; dotnet tool install --tool-path "$tools" SharpFuzz.CommandLine --version 2.3.0 >/dev/null; }

echo "== building the harness"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
dotnet publish "$repo/fuzz/Pocket.Fuzz" -c Release -o "$build" -v quiet -nologo >/dev/null
"$tools/sharpfuzz" "$build/Pocket.Protocol.dll"

mkdir -p "$out"
echo "== afl-fuzz for $minutes min (corpus fuzz/corpus, output $out)"
# AFL's checks of the machine's core pattern and CPU governor are for bare-metal tuning; they refuse to start otherwise.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_SKIP_BIN_CHECK=1
timeout --signal=INT "$((minutes * 60 + 30))" afl-fuzz -V "$((minutes * 60))" -i "$repo/fuzz/corpus" -o "$out" -t 5000 -m none -- "$build/Pocket.Fuzz" || true
stats="$out/default/fuzzer_stats"
[[ -f "$stats" ]] || { echo "afl-fuzz wrote no statistics" >&2; exit 1; }
grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg) ' "$stats"
crashes=$(awk -F: '/^saved_crashes/ {gsub(/ /, "", $2); print $2}' "$stats")
[[ "$crashes" == 0 ]] || { echo "$crashes crashes under $out/default/crashes" >&2; exit 1; }

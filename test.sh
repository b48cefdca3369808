#!/usr/bin/env bash
# Runs every test project, then the Python client's suite (clients/python/test.sh) against the built `pocket`.
# Extra arguments go to `dotnet test` (e.g. --filter Name~Capacity); with --filter only the .NET tests run.
set -uo pipefail
cd "$(dirname "$0")"

# Programs the tests drive: promtool (Prometheus's exposition parser, from Debian's prometheus package), chromium
# (the dashboard's browser test) and ip. Installed with apt-get when missing and this is a root shell on Debian.
# ip (iproute2) makes the network namespaces of the network fault suite (which needs root; elsewhere it is skipped).
if { ! command -v promtool >/dev/null || ! command -v chromium >/dev/null || ! command -v ip >/dev/null; } && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus chromium iproute2 >/dev/null \
    || echo "test.sh: installing prometheus, chromium and iproute2 failed; the metrics, dashboard and network fault tests will say what is missing" >&2
fi

# python3 for `pocket demo --functions-as python` (a .NET test) and the Python suite; redis for its examples.
# Files a test keeps for people to look at (the dashboard's screenshot): artifacts/test in the checkout (ignored by git).
export POCKET_TEST_ARTIFACTS="${POCKET_TEST_ARTIFACTS:-$PWD/artifacts/test}"
mkdir -p "$POCKET_TEST_ARTIFACTS"

deps=0
clients/python/install-deps.sh || deps=1
dotnet test Pocket.slnx -c Release --blame-hang-timeout 5m "$@"
status=$?
[ "$deps" -eq 0 ] || status=1

# The Python suite writes its counts beside the .NET results when CI asks for them (--results-directory).
results=""; filtered=0; prev=""
for arg in "$@"; do
  [ "$prev" = "--results-directory" ] && results="$arg"
  case "$arg" in --filter|--filter=*) filtered=1 ;; esac
  prev="$arg"
done
if [ "$filtered" -eq 0 ]; then
  counts=()
  [ -n "$results" ] && mkdir -p "$results" && counts=(--counts "$results/python.counts")
  clients/python/test.sh "${counts[@]}" || status=1
fi
exit "$status"

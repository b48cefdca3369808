#!/usr/bin/env bash
# Runs every test project, then the Python client's suite (clients/python/test.sh) against the built `pocket`.
# Extra arguments go to `dotnet test` (e.g. --filter Name~Capacity); with --filter only the .NET tests run.
set -uo pipefail
cd "$(dirname "$0")"
# python3 for `pocket demo --functions-as python` (a .NET test) and the Python suite; redis for its examples.
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

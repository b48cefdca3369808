#!/usr/bin/env bash
# Runs every test project. Extra arguments go to `dotnet test` (e.g. --filter Name~Capacity).
set -euo pipefail
cd "$(dirname "$0")"

# Programs the tests drive: promtool (Prometheus's exposition parser, from Debian's prometheus package) and chromium
# (the dashboard's browser test). Installed with apt-get when missing and this is a root shell on Debian.
if { ! command -v promtool >/dev/null || ! command -v chromium >/dev/null; } && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus chromium >/dev/null \
    || echo "test.sh: installing prometheus and chromium failed; the metrics and dashboard tests will say what is missing" >&2
fi
exec dotnet test Pocket.slnx -c Release --blame-hang-timeout 5m "$@"

#!/usr/bin/env bash
# Runs every test project. Extra arguments go to `dotnet test` (e.g. --filter Name~Capacity).
set -euo pipefail
cd "$(dirname "$0")"
exec dotnet test Pocket.slnx -c Release --blame-hang-timeout 5m "$@"

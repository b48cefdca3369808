#!/usr/bin/env bash
# The Python client's suite against a real `pocket up` (built by `dotnet build`/`./test.sh`; or set POCKET_EXE).
# Installs what it needs when missing (Debian/Ubuntu): python3, python3-redis and redis-server for the examples.
# Interpreter: $POCKET_PYTHON, else /usr/bin/python3 (the system one, which sees Debian's python3-redis).
# Arguments: [--counts FILE] [test name patterns ...]
set -euo pipefail
cd "$(dirname "$0")"

./install-deps.sh

python="${POCKET_PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=python3; fi
fi
exec "$python" run_tests.py "$@"

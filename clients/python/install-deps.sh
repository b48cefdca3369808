#!/usr/bin/env bash
# Installs what the Python client's tests and examples need when it is missing (Debian/Ubuntu, apt-get):
# python3 (the client itself needs nothing else), python3-redis and redis-server (latency.py's comparison),
# python3-boto3 (the S3 gateway note in docs/gateway.md is tested with it).
set -euo pipefail
need=()
command -v python3 >/dev/null || [ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import redis' 2>/dev/null || need+=(python3-redis)
command -v redis-server >/dev/null || need+=(redis-server)
/usr/bin/python3 -c "import boto3" 2>/dev/null || need+=(python3-boto3)
[ "${#need[@]}" -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "missing ${need[*]}: install them (no apt-get here)" >&2
  exit 1
fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${need[*]}"
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null

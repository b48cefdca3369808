#!/usr/bin/env bash
# What a drain costs the metadata server: the old path (the metadata server reads every extent of the draining node
# and writes it to the target) against CopyExtent (the target pulls the bytes from the source node). Each round starts
# a metadata server and two DRAM storage nodes as processes, loads MIB objects of 1 MiB onto the first node, drains it
# onto the second and prints one JSON line (bench/Pocket.Benchmarks DrainProfile: MB/s, the metadata server's CPU
# seconds during the drain and its peak RSS before and after). "old" starts the target with --no-copy-extent, as a
# node from before CopyExtent. Modes alternate, the first one switching each round.
#
#   bench/drain.sh [ROUNDS] [MIB]      e.g. bench/drain.sh 3 512
#
# POCKET (default: ./pocket beside this folder) is the command that runs pocket.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
mib="${2:-512}"
read -r -a pocket <<<"${POCKET:-$here/pocket}"
capacity="$((mib + 64))MiB"

work="$(mktemp -d)"
export POCKET_CLUSTER_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
cleanup() {
  exec 3>&- 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_line() { # wait_line FILE PREFIX
  for _ in $(seq 600); do
    if line="$(grep -m1 "^$2" "$1" 2>/dev/null)"; then
      echo "$line"
      return 0
    fi
    sleep 0.1
  done
  echo "no '$2' line in $1:" >&2
  cat "$1" >&2
  return 1
}

dotnet build -c Release "$here/bench/Pocket.Benchmarks" -v q -nologo >/dev/null
"${pocket[@]}" --help >/dev/null

run() { # run MODE
  local mode="$1" fifo="$work/stdin" extra=()
  [ "$mode" = old ] && extra=(--no-copy-extent)
  rm -f "$fifo" && mkfifo "$fifo"
  # Closing the fifo (fd 3) stops every role (--stop-on-stdin-eof); 3>&-: no role holds the writer open itself.
  "${pocket[@]}" metadata --port 0 --stop-on-stdin-eof <"$fifo" >"$work/metadata.log" 2>&1 3>&- &
  local metadata_pid=$!
  exec 3>"$fifo"
  local address
  address="$(wait_line "$work/metadata.log" "POCKET-METADATA address=" | sed 's/^POCKET-METADATA address=\([^ ]*\).*/\1/')"
  "${pocket[@]}" storage --metadata "$address" --capacity "$capacity" --stop-on-stdin-eof <"$fifo" >"$work/source.log" 2>&1 3>&- &
  wait_line "$work/source.log" "POCKET-NODE " >/dev/null
  "${pocket[@]}" storage --metadata "$address" --capacity "$capacity" --stop-on-stdin-eof "${extra[@]}" <"$fifo" >"$work/target.log" 2>&1 3>&- &
  wait_line "$work/target.log" "POCKET-NODE " >/dev/null
  local result
  result="$(dotnet "$here/bench/Pocket.Benchmarks/bin/Release/net10.0/Pocket.Benchmarks.dll" --drain "$address" "$metadata_pid" "$mib" 3>&-)"
  echo "{\"mode\":\"$mode\",\"round\":$round,${result#\{}"
  exec 3>&-
  wait
}

echo "# $(date -u +%FT%TZ) $(uptime)"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then run old; run copy; else run copy; run old; fi
done
echo "# $(uptime)"

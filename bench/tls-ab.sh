#!/usr/bin/env bash
# Before/after of a change to TLS serving: two builds of Pocket (git revisions OLD and NEW), run alternately (the order
# flips every pass), each against its own `pocket metadata` and `pocket storage` listening in TLS (a self-signed P-256
# certificate made here with openssl): `pocket bench --connections N --op get --size 1KiB` over TLS for each N, then
# bench/idle-connections.py --tls (RSS and threads of each server holding IDLE_N TLS connections). One line per run
# and a table of same-pass ratios NEW / OLD at the end.
#
#   bench/tls-ab.sh OLD NEW [RESULTS_DIR]
#
#   OLD, NEW       git revisions (commits, branches, tags) of this repository
#   RESULTS_DIR    default ./bench-results/tls-ab (git-ignored): OLD-N-PASS.json / .log, idle-*.txt, ab.txt
#
# Environment: TLS_N (default "1 64"), IDLE_N (default 1000; 0 skips it), PASSES (default 2), PROCESSES (default 2),
# DURATION (8s), WARMUP (1s). Write `uptime` beside the figures.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/ab-lib.sh
source "$repo/bench/ab-lib.sh"
ab_start "${BASH_SOURCE[0]}" tls-ab "$@"

work="$(mktemp -d)"
servers=()
stop_servers() {
    for pid in "${servers[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    servers=()
}
cleanup() {
    stop_servers
    ab_remove_checkouts "$repo" "$work"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ab_build "$repo" "$work" "$old" "$new" ab_dotnet_build

cert="$work/cert.pem" key="$work/key.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$key" -out "$cert" -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1
tls=(--tls-cert "$cert" --tls-key "$key" --tls-ca "$cert" --tls-name localhost)

export POCKET_HOME="$work/pocket-home"
export POCKET_CLUSTER_TOKEN
POCKET_CLUSTER_TOKEN="$(openssl rand -hex 16)"
unset POCKET_METADATA
ulimit -n "$(ulimit -Hn)"

# Starts a role of build $1 in the background (in this shell: it keeps the role's stdin open); sets $address once ready.
address=""
start_role() {
    local v="$1" ready="$2" out="$work/role-$RANDOM.out"
    shift 2
    mkfifo "$out.in"
    dotnet "$work/$v/pocket.dll" "$@" --stop-on-stdin-eof <"$out.in" >"$out" 2>/dev/null &
    servers+=("$!")
    exec {keep}>"$out.in"
    for _ in $(seq 1 600); do
        if grep -q "^$ready" "$out" 2>/dev/null; then
            address="$(grep "^$ready" "$out" | head -1 | tr ' ' '\n' | sed -n 's/^address=//p')"
            return
        fi
        sleep 0.1
    done
    echo "$v $ready did not start" >&2
    exit 1
}

: >"$results/ab.txt"
for pass in $(seq 1 "${PASSES:-2}"); do
    order="old new"
    ((pass % 2 == 0)) && order="new old"
    for v in $order; do
        start_role "$v" "POCKET-METADATA " metadata --port 0 "${tls[@]}"
        metadata="$address"
        start_role "$v" "POCKET-NODE " storage --metadata "$metadata" --capacity 256MiB --port 0 "${tls[@]}"
        for n in ${TLS_N:-1 64}; do
            name="$v-$n-$pass"
            load="$(cut -d' ' -f1 /proc/loadavg)"
            processes="${PROCESSES:-2}"
            ((processes > n)) && processes="$n"
            dotnet "$work/$v/pocket.dll" bench --metadata "$metadata" --tls-ca "$cert" --tls-name localhost \
                --connections "$n" --processes "$processes" --op get --size 1KiB \
                --duration "${DURATION:-8s}" --warmup "${WARMUP:-1s}" --json >"$results/$name.json" 2>"$results/$name.log" ||
                { echo "$name failed; its log:" >&2; tail -5 "$results/$name.log" >&2; continue; }
            jq -r --arg v "$v" --arg n "$n" --arg pass "$pass" --arg load "$load" \
                '[$pass, $n, $v, $load, (.systems.pocket.get | .ops_per_s, .p50_us, .p99_us, (.server_cpu_us_per_op // "nan"))] | map(tostring) | join(" ")' \
                "$results/$name.json" | tee -a "$results/ab.txt"
        done
        stop_servers
        if [[ "${IDLE_N:-1000}" != 0 ]]; then
            python3 "$repo/bench/idle-connections.py" --tls --connections "${IDLE_N:-1000}" --rounds 1 \
                --pocket "dotnet $work/$v/pocket.dll" | sed "s/^/$v pass $pass: /" | tee -a "$results/idle-$pass.txt"
        fi
    done
done

echo
echo "| N | pass | load old / new | ops/s old / new (new/old) | p50 us (new/old) | p99 us (new/old) | server CPU us/op (new/old) |"
echo "|---|---|---|---|---|---|---|"
awk '
    { key = $2 " " $1; row[key, $3] = $0; keys[key] = 1 }
    END {
        for (key in keys) {
            if (!((key, "old") in row) || !((key, "new") in row)) continue
            split(row[key, "old"], o, " "); split(row[key, "new"], w, " ")
            printf "| %s | %s | %s / %s | %.0f / %.0f (%.2fx) | %.0f / %.0f (%.2fx) | %.0f / %.0f (%.2fx) | %s / %s |\n",
                o[2], o[1], o[4], w[4], o[5], w[5], w[5] / o[5], o[6], w[6], w[6] / o[6], o[7], w[7], w[7] / o[7], o[8], w[8]
        }
    }' "$results/ab.txt" | sort -t'|' -k2,2n -k3,3n

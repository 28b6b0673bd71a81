#!/usr/bin/env bash
# GET /v1/users/me (or ROUTE) of two builds of Tessera beside a bare hyper hello-world, in one
# run: did a change move its ratio to hello-world? (BENCHMARKS.md.) Not a test: it prints a table.
#
#   git worktree add /tmp/before <rev> && (cd /tmp/before && CARGO_TARGET_DIR=$PWD/target \
#     cargo build --release --bin tessera) && mkdir -p /tmp/a && cp target/release/tessera /tmp/a/
#   A=/tmp/a/tessera B=target/release/tessera bash tools/bench-ab.sh
#
# Both run with their defaults (request log on, `info`, to a file) on databases of their own.
# Rounds rotate the order of the three servers; ratios are taken within each round and the
# verdict uses their median. Knobs: ROUTE (/v1/users/me; /v1/forward-auth for forward auth),
# ROUNDS (10), ROUND_SECONDS (3), CONNECTIONS (32), PIN (0: shared cores; 1: servers on CPU 0,
# wrk on CPU 1).
set -euo pipefail
cd "$(dirname "$0")/.."

A=${A:?A=path to the first tessera binary}
B=${B:-target/release/tessera}
ROUTE=${ROUTE:-/v1/users/me}
ROUNDS=${ROUNDS:-10}
ROUND_SECONDS=${ROUND_SECONDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
PIN=${PIN:-0}
PASSWORD='correct horse battery staple'

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --quiet --release --example hello
server_cpus=() client_cpus=()
if [ "$PIN" = 1 ]; then server_cpus=(taskset -c 0) client_cpus=(taskset -c 1); fi
# shellcheck source=tools/bench-common.sh
source tools/bench-common.sh

start() { # NAME BINARY → URL on stdout; the server's pid in $work/NAME.pid
  local name=$1 binary=$2 port; port=$(free_port)
  "$binary" keys generate --keys "$work/$name.json" >/dev/null
  RUST_LOG=info "${server_cpus[@]}" "$binary" serve --listen "127.0.0.1:$port" --db "$work/$name.db" \
    --keys "$work/$name.json" --login-rate 0 --register-rate 0 >/dev/null 2>"$work/$name.log" &
  echo $! >"$work/$name.pid"
  wait_up "http://127.0.0.1:$port/healthz"
  curl -s -o /dev/null -X POST "http://127.0.0.1:$port/v1/users" -H 'Content-Type: application/json' \
    -d "{\"username\":\"bench\",\"full_name\":\"Bench User\",\"password\":\"$PASSWORD\",\"mothers_favorite_search_engine\":\"Searx\"}"
  echo "http://127.0.0.1:$port"
}
token_for() {
  curl -s -X POST "$1/v1/sessions" -H 'Content-Type: application/json' \
    -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}
rps() { # URL [wrk args…]
  local url=$1; shift
  "${client_cpus[@]}" wrk -t1 -c"$CONNECTIONS" -d"${ROUND_SECONDS}s" "$@" "$url" | awk '/Requests\/sec/ { printf "%.0f", $2 }'
}

a_url=$(start a "$A"); pids+=("$(cat "$work/a.pid")")
b_url=$(start b "$B"); pids+=("$(cat "$work/b.pid")")
a_token=$(token_for "$a_url") b_token=$(token_for "$b_url")
hello_port=$(free_port)
"${server_cpus[@]}" target/release/examples/hello "127.0.0.1:$hello_port" 2>/dev/null & pids+=($!)
wait_up "http://127.0.0.1:$hello_port/"

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)$(grep -qw sha_ni /proc/cpuinfo && echo ', SHA-NI'), $(uname -r)"
echo "A: $A"
echo "B: $B"
echo "wrk -t1 -c$CONNECTIONS, $ROUNDS rounds of ${ROUND_SECONDS}s, $([ "$PIN" = 1 ] && echo 'servers on CPU 0, wrk on CPU 1' || echo 'shared cores')"
printf 'round\thello\tA %s\tB %s\tA/hello\tB/hello\n' "$ROUTE" "$ROUTE"
servers=(hello a b)
a_ratios=() b_ratios=()
for round in $(seq 1 "$ROUNDS"); do
  declare -A r=()
  for i in 0 1 2; do
    server=${servers[$(((round + i) % 3))]}
    case $server in
      hello) r[hello]=$(rps "http://127.0.0.1:$hello_port/") ;;
      a) r[a]=$(rps "$a_url$ROUTE" -H "Authorization: Bearer $a_token") ;;
      b) r[b]=$(rps "$b_url$ROUTE" -H "Authorization: Bearer $b_token") ;;
    esac
  done
  ra=$(awk -v x="${r[a]}" -v h="${r[hello]}" 'BEGIN { printf "%.3f", x / h }')
  rb=$(awk -v x="${r[b]}" -v h="${r[hello]}" 'BEGIN { printf "%.3f", x / h }')
  a_ratios+=("$ra") b_ratios+=("$rb")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "${r[hello]}" "${r[a]}" "${r[b]}" "$ra" "$rb"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ma=$(median "${a_ratios[@]}") mb=$(median "${b_ratios[@]}")
echo "median $ROUTE ÷ hello: A $ma, B $mb; B's ratio is $(awk -v a="$ma" -v b="$mb" 'BEGIN { printf "%.3f", b / a }')× A's"

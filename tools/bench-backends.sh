#!/usr/bin/env bash
# GET /v1/users/me on SQLite and on PostgreSQL, beside a bare hyper hello-world, in one run
# (BENCHMARKS.md, "PostgreSQL"). Not a test: it prints a table. PostgreSQL is a throwaway
# cluster on this machine (tools/postgres-throwaway.sh), so it shares the cores.
#
#   bash tools/bench-backends.sh        # ROUNDS (5) of ROUND_SECONDS (5), CONNECTIONS (32)
#
# Both servers run with their defaults (request log on, `info`, to a file).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
ROUND_SECONDS=${ROUND_SECONDS:-5}
CONNECTIONS=${CONNECTIONS:-32}
PASSWORD='correct horse battery staple'

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
# shellcheck source=tools/bench-common.sh
source tools/bench-common.sh
build_release hello
eval "$(bash tools/postgres-throwaway.sh)"
trap 'cleanup; bash tools/postgres-throwaway.sh stop' EXIT

target/release/tessera keys generate --keys "$work/jwks.json" >/dev/null
start() { # DB PORT → a token on stdout; the server's pid in $work/PORT.pid (this runs in a
  # subshell, so `pids` would not reach the cleanup)
  RUST_LOG=info target/release/tessera serve --listen "127.0.0.1:$2" --db "$1" --keys "$work/jwks.json" \
    --login-rate 0 --register-rate 0 >/dev/null 2>"$work/$2.log" &
  echo $! >"$work/$2.pid"
  wait_up "http://127.0.0.1:$2/healthz"
  curl -s -o /dev/null -X POST "http://127.0.0.1:$2/v1/users" -H 'Content-Type: application/json' \
    -d "{\"username\":\"bench\",\"full_name\":\"Bench User\",\"password\":\"$PASSWORD\",\"mothers_favorite_search_engine\":\"Searx\"}"
  curl -s -X POST "http://127.0.0.1:$2/v1/sessions" -H 'Content-Type: application/json' \
    -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}
sqlite_port=$(free_port) postgres_port=$(free_port) hello_port=$(free_port)
sqlite_token=$(start "$work/tessera.db" "$sqlite_port")
pids+=("$(cat "$work/$sqlite_port.pid")")
postgres_token=$(start "$TESSERA_TEST_POSTGRES/postgres" "$postgres_port")
pids+=("$(cat "$work/$postgres_port.pid")")
target/release/examples/hello "127.0.0.1:$hello_port" 2>/dev/null & pids+=($!)
wait_up "http://127.0.0.1:$hello_port/"
rps() { wrk -t1 -c"$CONNECTIONS" -d"${ROUND_SECONDS}s" "$@" | awk '/Requests\/sec/ { printf "%.0f", $2 }'; }

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -r); PostgreSQL $(ls /usr/lib/postgresql | sort -V | tail -n 1) on the same machine"
printf 'round\thello\tsqlite /me\tpostgres /me\tpostgres/sqlite\n'
for round in $(seq 1 "$ROUNDS"); do
  h=$(rps "http://127.0.0.1:$hello_port/")
  s=$(rps -H "Authorization: Bearer $sqlite_token" "http://127.0.0.1:$sqlite_port/v1/users/me")
  p=$(rps -H "Authorization: Bearer $postgres_token" "http://127.0.0.1:$postgres_port/v1/users/me")
  printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$h" "$s" "$p" "$(awk -v p="$p" -v s="$s" 'BEGIN { printf "%.2f", p / s }')"
done

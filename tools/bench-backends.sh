#!/usr/bin/env bash
# GET /v1/users/me on SQLite and on a PostgreSQL replica, beside a bare hyper hello-world, in
# one run (BENCHMARKS.md, "PostgreSQL"). Not a test: it prints tables. PostgreSQL is a throwaway
# cluster on this machine (tools/postgres-throwaway.sh), so it shares the cores. Per round it
# also prints PostgreSQL's CPU (every process of the cluster) over the replica's during the
# replica's /me run, and the statements PostgreSQL committed per 1,000 of those requests. Then
# logout latency with two replicas acknowledging, and with the second one frozen (SIGSTOP: its
# lease runs out, nothing is closed).
#
#   bash tools/bench-backends.sh        # ROUNDS (5) of ROUND_SECONDS (5), CONNECTIONS (32)
#
# Every server runs with its defaults (request log on, `info`, to a file; 5 s replica lease).
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
second_port=$(free_port)
start "$TESSERA_TEST_POSTGRES/postgres" "$second_port" >/dev/null
second_pid=$(cat "$work/$second_port.pid")
pids+=("$second_pid")
# Both replicas answer from memory once they hold their leases.
for port in "$postgres_port" "$second_port"; do
  for _ in $(seq 1 100); do
    curl -s "http://127.0.0.1:$port/readyz" | grep -q '"memory"' && break
    sleep 0.1
  done
done
postgres_pid=$(cat "$work/$postgres_port.pid")
wrk_run() { wrk -t1 -c"$CONNECTIONS" -d"${ROUND_SECONDS}s" "$@"; }
rps() { awk '/Requests\/sec/ { printf "%.0f", $2 }'; }
requests() { awk '/requests in/ { print $1 }'; }
ticks() { # PIDS... → their user+system CPU ticks
  for pid in "$@"; do awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0; done | awk '{ t += $1 } END { print t }'
}
cluster_ticks() { ticks $(pgrep -u postgres); }
commits() { psql_at "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"; }
psql_at() { PGPASSWORD=$PGPASSWORD psql -X -A -t -q "$TESSERA_TEST_POSTGRES/postgres" -c "$1"; }
command -v psql >/dev/null || { echo "psql is missing (Debian: postgresql-client)" >&2; exit 1; }

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -r); PostgreSQL $(ls /usr/lib/postgresql | sort -V | tail -n 1) on the same machine"
printf 'round\thello\tsqlite /me\tpostgres /me\tpostgres/sqlite\tcluster CPU/replica CPU\tstatements per 1000 /me\n'
for round in $(seq 1 "$ROUNDS"); do
  h=$(wrk_run "http://127.0.0.1:$hello_port/" | rps)
  s=$(wrk_run -H "Authorization: Bearer $sqlite_token" "http://127.0.0.1:$sqlite_port/v1/users/me" | rps)
  # The statement count reads pg_stat_database, which the statistics collector updates when a
  # backend goes idle: its own query counts as one, subtracted.
  sleep 1.1
  c0=$(commits) cluster0=$(cluster_ticks) replica0=$(ticks "$postgres_pid")
  out=$(wrk_run -H "Authorization: Bearer $postgres_token" "http://127.0.0.1:$postgres_port/v1/users/me")
  cluster1=$(cluster_ticks) replica1=$(ticks "$postgres_pid")
  sleep 1.1 # a backend flushes its statistics at most once a second
  c1=$(commits)
  p=$(rps <<<"$out") n=$(requests <<<"$out")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$h" "$s" "$p" \
    "$(awk -v p="$p" -v s="$s" 'BEGIN { printf "%.2f", p / s }')" \
    "$(awk -v c=$((cluster1 - cluster0)) -v r=$((replica1 - replica0)) 'BEGIN { printf "%.3f", c / r }')" \
    "$(awk -v d=$((c1 - c0 - 1)) -v n="$n" 'BEGIN { printf "%.2f", d * 1000 / n }')"
done

login() { # PORT → an access token
  curl -s -X POST "http://127.0.0.1:$1/v1/sessions" -H 'Content-Type: application/json' \
    -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}
logout_seconds() { # PORT COUNT → one logout's duration per line, each with a fresh session
  for _ in $(seq 1 "$2"); do
    token=$(login "$1")
    curl -s -o /dev/null -w '%{time_total}\n' -X DELETE -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$1/v1/sessions/current"
  done
}
percentiles() { sort -n | awk '{ v[NR] = $1 } END { printf "p50 %.1f ms, p99 %.1f ms, max %.1f ms (n=%d)", v[int(NR * 0.5 + 0.5)] * 1000, v[int(NR * 0.99 + 0.5)] * 1000, v[NR] * 1000, NR }'; }
echo
echo "logout on replica A, acknowledged by A and B: $(logout_seconds "$postgres_port" 200 | percentiles)"
kill -STOP "$second_pid"
first=$(logout_seconds "$postgres_port" 1)
echo "logout on A with B frozen: the first one $(awk -v s="$first" 'BEGIN { printf "%.0f ms", s * 1000 }') (B's lease running out), then $(logout_seconds "$postgres_port" 50 | percentiles)"
kill -CONT "$second_pid"

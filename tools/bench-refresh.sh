#!/usr/bin/env bash
# Refresh throughput beside SQLite's own commit rate, side by side in one run (BENCHMARKS.md,
# "Refresh"). Not a test: nothing here asserts; it prints a table.
#
#   bash tools/bench-refresh.sh           # CLIENTS (32) rotate their own sessions for ROUNDS (5)
#                                         # of ROUND_SECONDS (5), alternating with a one-row UPDATE loop
#
# Tessera runs with its defaults (request log on, `info`, to a file) except the per-IP limits:
# every client here is 127.0.0.1, where real clients would be many addresses.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-32}
ROUND_SECONDS=${ROUND_SECONDS:-5}
ROUNDS=${ROUNDS:-5}

# shellcheck source=tools/bench-common.sh
source tools/bench-common.sh
build_release refresh_load

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(uname -r)"
echo "filesystem of the databases: $(df -T "$work" | awk 'NR == 2 {print $2}')"
target/release/tessera keys generate --keys "$work/jwks.json" >/dev/null
port=$(free_port)
target/release/tessera serve --listen "127.0.0.1:$port" --db "$work/tessera.db" --keys "$work/jwks.json" \
  --login-rate 0 --register-rate 0 --refresh-rate 0 2>"$work/tessera.log" &
pids+=("$!")
wait_up "http://127.0.0.1:$port/healthz"
target/release/examples/refresh_load "http://127.0.0.1:$port" "$work" "$CLIENTS" "$ROUND_SECONDS" "$ROUNDS"
echo "request lines logged: $(grep -c 'tessera::request' "$work/tessera.log")"

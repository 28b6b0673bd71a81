#!/usr/bin/env bash
# Two Tessera replicas on one throwaway PostgreSQL, on this machine, in one command:
#
#   bash tools/replicas.sh            # Ctrl-C stops the replicas and the database
#
# PostgreSQL comes from Debian's packages (installed if missing), runs as the `postgres` user in
# a temporary folder on a loopback port; its password travels in PGPASSWORD, never in a URL or
# argv. The replicas share one key file and listen on 127.0.0.1:8081 and :8082 (PORT_A, PORT_B).
# Their logs are kept in a folder printed at start, after the script ends too; the database's
# URL and a file holding its password (mode 0600) are printed for the admin CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT_A=${PORT_A:-8081}
PORT_B=${PORT_B:-8082}

cargo build --quiet --release --bin tessera
eval "$(bash tools/postgres-throwaway.sh)"
work=$(mktemp -d)
logs=$(mktemp -d /tmp/tessera-replica-logs.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash tools/postgres-throwaway.sh stop
  rm -rf "$work"
  echo "replicas and database stopped; their logs stay in $logs"
}
trap cleanup EXIT INT TERM

target/release/tessera keys generate --keys "$work/jwks.json" >/dev/null
export TESSERA_DB="$TESSERA_TEST_POSTGRES/postgres"
# The admin CLI needs the URL and the password: the password in a private file, never printed.
(umask 077 && printf 'export TESSERA_DB=%s\nexport PGPASSWORD=%s\n' "$TESSERA_DB" "$PGPASSWORD" \
  >"$work/admin.env")
for port in "$PORT_A" "$PORT_B"; do
  target/release/tessera serve --listen "127.0.0.1:$port" --keys "$work/jwks.json" \
    2>"$logs/replica-$port.log" &
  pids+=("$!")
done
for port in "$PORT_A" "$PORT_B"; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done

cat <<TXT
Two replicas on one PostgreSQL:
  A         http://127.0.0.1:$PORT_A
  B         http://127.0.0.1:$PORT_B
  database  $TESSERA_DB (password in PGPASSWORD)
  logs      $logs (kept after Ctrl-C)

The admin CLI on the same database, from another terminal in this folder:

  source $work/admin.env && target/release/tessera user list

Register and log in on A, read on B, log out on A, read on B again (401):

  curl -s -X POST http://127.0.0.1:$PORT_A/v1/users -H 'Content-Type: application/json' \\
    -d '{"username":"kvothe","full_name":"Patrick Rothfuss","password":"3##Heel7sa*9-zRwT","mothers_favorite_search_engine":"Searx"}'; echo
  TOKEN=\$(curl -s -X POST http://127.0.0.1:$PORT_A/v1/sessions -H 'Content-Type: application/json' \\
    -d '{"username":"kvothe","password":"3##Heel7sa*9-zRwT"}' | sed -E 's/.*"access_token":"([^"]+)".*/\\1/')
  curl -s http://127.0.0.1:$PORT_B/v1/users/me -H "Authorization: Bearer \$TOKEN"; echo
  curl -s -o /dev/null -w '%{http_code}\\n' -X DELETE http://127.0.0.1:$PORT_A/v1/sessions/current -H "Authorization: Bearer \$TOKEN"
  curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:$PORT_B/v1/users/me -H "Authorization: Bearer \$TOKEN"

Ctrl-C stops both replicas and the database.
TXT
wait

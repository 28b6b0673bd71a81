#!/usr/bin/env bash
# Contract fuzzing: schemathesis drives every operation of openapi.json against a live server,
# stateful links included, and fails on any 5xx, any response that breaks the schema, or a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-ci
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi

cargo build --quiet --bin tessera
workdir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
target/debug/tessera keys generate --keys "$workdir/jwks.json" >/dev/null
# Cheap argon2 and no per-IP limits: the fuzzer sends thousands of requests from one address.
target/debug/tessera serve --listen "127.0.0.1:$port" --db "$workdir/t.db" --keys "$workdir/jwks.json" \
  --argon2-memory-kib 256 --argon2-iterations 1 --login-rate 0 --register-rate 0 --refresh-rate 0 \
  2>"$workdir/server.log" &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -sf "$base/healthz" >/dev/null && break
  sleep 0.1
done

# A real account, so authenticated operations are exercised past the Bearer check.
password='fuzzing is a fine way to spend an afternoon'
curl -sf -X POST "$base/v1/users" -H 'Content-Type: application/json' \
  -d "{\"username\":\"fuzzer\",\"full_name\":\"Fuzz Er\",\"password\":\"$password\",\"mothers_favorite_search_engine\":\"Searx\"}" >/dev/null
fresh_token() {
  curl -sf -X POST "$base/v1/sessions" -H 'Content-Type: application/json' \
    -d "{\"username\":\"fuzzer\",\"password\":\"$password\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}

fuzz() {
  "$venv/bin/schemathesis" run openapi.json --url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection \
    --phases "${PHASES:-examples,coverage,fuzzing,stateful}" \
    --max-examples 50 \
    --suppress-health-check all \
    --workers 2 \
    "$@"
}

# Operations that revoke the token they are given (logout, password change, account deletion,
# ending a session — which may be the token's own) run after the others, each group with a token
# of its own, so they cannot starve the others of authentication.
destructive='^(DELETE /v1/sessions|DELETE /v1/sessions/current|DELETE /v1/sessions/\{id\}|DELETE /v1/users/me|PUT /v1/users/me/password)$'
# The session chain the stateful phase follows through the links: login → refresh → list → end.
# Its logins use the account registered above (.ci/schemathesis_hooks.py), so they succeed.
sessions='^(POST /v1/sessions|POST /v1/sessions/refresh|GET /v1/sessions|DELETE /v1/sessions/\{id\})$'
echo "== schemathesis: every operation that keeps the token alive"
fuzz --header "Authorization: Bearer $(fresh_token)" --exclude-name-regex "$destructive|^POST /v1/introspect$"
# Introspection authenticates a client, not a user: a client of this throwaway server, made by
# the admin CLI (like the Bearer tokens above, its header is a throwaway credential).
secret=$(target/debug/tessera client add fuzz --db "$workdir/t.db" | grep '^tsc_')
basic=$(printf 'fuzz:%s' "$secret" | base64 -w0)
echo "== schemathesis: introspection, as a registered client (no links to follow: no stateful phase)"
PHASES=examples,coverage,fuzzing fuzz --header "Authorization: Basic $basic" --include-name-regex '^POST /v1/introspect$'
echo "== schemathesis: the session chain (login, refresh, list, end)"
FUZZ_USERNAME=fuzzer FUZZ_PASSWORD="$password" PYTHONPATH=.ci SCHEMATHESIS_HOOKS=schemathesis_hooks \
  fuzz --header "Authorization: Bearer $(fresh_token)" --include-name-regex "$sessions"
echo "== schemathesis: operations that revoke their token"
fuzz --header "Authorization: Bearer $(fresh_token)" --include-name-regex "$destructive"

# The server must still be alive after all of that.
kill -0 "$server"
curl -sf "$base/healthz" >/dev/null
echo "schemathesis: server survived and every response matched the contract"

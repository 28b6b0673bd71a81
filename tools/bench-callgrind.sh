#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the machine-independent line of the
# end-to-end benchmark (BENCHMARKS.md). Each server runs under callgrind; after a warm-up the
# counters are zeroed, exactly N requests are sent over keep-alive connections, and the counts
# are dumped: user-space instructions ÷ N. Repeatable to a fraction of a per cent on any machine.
#
#   bash tools/bench-callgrind.sh              # hello, stateless, tessera (defaults, logging on),
#                                              # tessera's forward auth, tessera with RUST_LOG=warn
#   N=4000 bash tools/bench-callgrind.sh
#   SERVERS="tessera" KEEP=/tmp/cg bash tools/bench-callgrind.sh   # keep the dumps to annotate
#
# Caveat: valgrind hides SHA-NI, so SHA-256 runs in software under it and costs far more than on
# the machine. The script prints each server's total and the total without `sha2::` functions;
# compare servers on the second, and builds of ours on either.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
WARMUP=${WARMUP:-300}
SERVERS=${SERVERS:-"hello stateless tessera tessera-forward tessera-warn"}
BIN=${BIN:-target/release}
PASSWORD='correct horse battery staple'

command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
# shellcheck source=tools/bench-common.sh
source tools/bench-common.sh
if [ "$BIN" = target/release ]; then
  build_release hello stateless
fi

# send URL COUNT [TOKEN]: COUNT GETs over 4 keep-alive connections, every answer checked.
send() {
  python3 - "$@" <<'PY'
import http.client, sys, urllib.parse
url, count = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2])
headers = {"Authorization": "Bearer " + sys.argv[3]} if len(sys.argv) > 3 else {}
conns = [http.client.HTTPConnection(url.hostname, url.port) for _ in range(4)]
for i in range(count):
    c = conns[i % 4]
    c.request("GET", url.path, headers=headers)
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"answer {r.status}")
PY
}

"$BIN/tessera" keys generate --keys "$work/jwks.json" >/dev/null
# A token from a normal (unmeasured) tessera on the same keys and database.
port=$(free_port)
"$BIN/tessera" serve --listen "127.0.0.1:$port" --db "$work/t.db" --keys "$work/jwks.json" 2>/dev/null &
plain=$!
wait_up "http://127.0.0.1:$port/healthz"
curl -s -o /dev/null -X POST "http://127.0.0.1:$port/v1/users" -H 'Content-Type: application/json' \
  -d "{\"username\":\"bench\",\"full_name\":\"Bench User\",\"password\":\"$PASSWORD\",\"mothers_favorite_search_engine\":\"Searx\"}"
token=$(curl -s -X POST "http://127.0.0.1:$port/v1/sessions" -H 'Content-Type: application/json' \
  -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
kill "$plain"; wait "$plain" 2>/dev/null || true

# The request future's size budget (a copy of it is made several times per request): checked
# here, beside the counts it protects, rather than in the test suite, which a compiler upgrade
# must not break.
cargo test --quiet --lib -- --ignored a_request_future_is_held_once 2>&1 | grep -E 'test result|panicked|bytes' || true

echo "callgrind: $N requests per server after $WARMUP of warm-up; $(valgrind --version)"
printf '%-16s %16s %22s\n' server "instructions/req" "without sha2:: (SHA-NI caveat)"
for server in $SERVERS; do
  port=$(free_port)
  out="$work/$server.callgrind"
  grind=(valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no --collect-atstart=yes)
  case $server in
    hello) "${grind[@]}" "$BIN/examples/hello" "127.0.0.1:$port" 2>"$work/$server.log" & path=/ ;;
    stateless) "${grind[@]}" "$BIN/examples/stateless" "127.0.0.1:$port" "$work/jwks.json" 2>"$work/$server.log" & path=/v1/users/me ;;
    tessera) "${grind[@]}" "$BIN/tessera" serve --listen "127.0.0.1:$port" --db "$work/t.db" --keys "$work/jwks.json" 2>"$work/$server.log" & path=/v1/users/me ;;
    tessera-forward) "${grind[@]}" "$BIN/tessera" serve --listen "127.0.0.1:$port" --db "$work/t.db" --keys "$work/jwks.json" 2>"$work/$server.log" & path=/v1/forward-auth ;;
    tessera-warn) RUST_LOG=warn "${grind[@]}" "$BIN/tessera" serve --listen "127.0.0.1:$port" --db "$work/t.db" --keys "$work/jwks.json" 2>"$work/$server.log" & path=/v1/users/me ;;
  esac
  pid=$!
  pids+=("$pid")
  url="http://127.0.0.1:$port$path"
  wait_up "http://127.0.0.1:$port/" || { cat "$work/$server.log"; exit 1; }
  send "$url" "$WARMUP" "$token"
  callgrind_control --zero "$pid" >/dev/null 2>&1
  send "$url" "$N" "$token"
  callgrind_control --dump "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # The dump taken after the N requests is the one file whose name ends in a number ≥ 1.
  dump=$(ls "$out".* 2>/dev/null | sort | head -1)
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$dump" "$KEEP/$server.callgrind"; fi
  total=$(awk '/^summary:/ { print $2 }' "$dump")
  sha=$(callgrind_annotate --threshold=100 "$dump" 2>/dev/null | awk '/sha2::/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')
  awk -v s="$server" -v t="$total" -v h="$sha" -v n="$N" 'BEGIN { printf "%-16s %16.0f %22.0f\n", s, t / n, (t - h) / n }'
done

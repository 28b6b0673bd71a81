#!/usr/bin/env bash
# Tessera as the gate in front of apps (BENCHMARKS.md, "Forward auth and many tokens"), side by
# side in one run. Not a test: nothing here asserts; it prints tables. Client and servers share
# this machine's cores.
#
#   bash tools/bench-gateway.sh            # ≈ 3 min
#
# 1. Forward auth beside /me, and both with TOKEN_COUNT distinct live tokens presented in turn
#    (tools/wrk-tokens.lua) beside hello-world driven by the same script.
# 2. Through real nginx (deploy/nginx.conf) with keep-alive to Tessera: a protected request to a
#    trivial upstream (hello-world) beside the same nginx proxying the same upstream without
#    auth; CPU per request of nginx, Tessera and the upstream says where the difference goes.
#
# Tessera runs as users run it: defaults, request log on (`info`, to a file). The sessions are
# made by a setup server on the same database with cheap argon2 (a login's hash is not what is
# measured), then the measured server starts with every default.
# Knobs: TOKEN_COUNT (4000), ROUNDS (8) of ROUND_SECONDS (3), CONNECTIONS (32).
set -euo pipefail
cd "$(dirname "$0")/.."

TOKEN_COUNT=${TOKEN_COUNT:-4000}
ROUNDS=${ROUNDS:-8}
ROUND_SECONDS=${ROUND_SECONDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
PASSWORD='correct horse battery staple'

for tool in wrk nginx; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null
  fi
done
# shellcheck source=tools/bench-common.sh
source tools/bench-common.sh
build_release hello
bin=target/release

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "cpu: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)$(grep -qw sha_ni /proc/cpuinfo && echo ', SHA-NI')"
echo "rustc: $(rustc --version); $(nginx -v 2>&1)"
echo "wrk: -t1 -c$CONNECTIONS; client and servers share the cores"
echo

"$bin/tessera" keys generate --keys "$work/jwks.json" >/dev/null

# ------------------------------------------------------------------ sessions to present
setup_port=$(free_port)
"$bin/tessera" serve --listen "127.0.0.1:$setup_port" --db "$work/t.db" --keys "$work/jwks.json" \
  --argon2-memory-kib 256 --argon2-iterations 1 --login-rate 0 --register-rate 0 \
  2>/dev/null &
setup_pid=$!
pids+=("$setup_pid")
wait_up "http://127.0.0.1:$setup_port/healthz"
# Users 1..TOKEN_COUNT, registered and logged in over eight keep-alive connections: one token
# per line.
python3 - "$setup_port" "$TOKEN_COUNT" "$PASSWORD" >"$work/tokens.txt" <<'PY'
import concurrent.futures, http.client, json, sys
port, count, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def post(conn, path, body):
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    if reply.status >= 300:
        sys.exit(f"{path}: {reply.status} {data[:200]!r}")
    return data
def users(numbers):
    conn, tokens = http.client.HTTPConnection("127.0.0.1", port), []
    for n in numbers:
        post(conn, "/v1/users", {"username": f"user{n}", "full_name": f"Bench User {n}",
                                 "password": password, "mothers_favorite_search_engine": "Searx"})
        login = post(conn, "/v1/sessions", {"username": f"user{n}", "password": password})
        tokens.append(json.loads(login)["access_token"])
    return tokens
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for tokens in pool.map(users, [range(k, count + 1, 8) for k in range(1, 9)]):
        print("\n".join(tokens))
PY
head -1 "$work/tokens.txt" >"$work/one-token.txt"
kill "$setup_pid"; wait "$setup_pid" 2>/dev/null || true
echo "$(grep -c . "$work/tokens.txt") live tokens of as many users"

# ------------------------------------------------------------------ the servers
tessera_port=$(free_port)
RUST_LOG=info "$bin/tessera" serve --listen "127.0.0.1:$tessera_port" --db "$work/t.db" \
  --keys "$work/jwks.json" --trusted-proxy 127.0.0.1 2>"$work/tessera.log" &
tessera_pid=$!
pids+=("$tessera_pid")
tessera_url="http://127.0.0.1:$tessera_port"
wait_up "$tessera_url/healthz"
hello_port=$(free_port)
"$bin/examples/hello" "127.0.0.1:$hello_port" 2>/dev/null &
hello_pid=$!
pids+=("$hello_pid")
wait_up "http://127.0.0.1:$hello_port/"

# nginx from deploy/nginx.conf (only its addresses changed), and beside it a server block that
# proxies the same upstream the same way without asking Tessera.
protected_port=$(free_port) plain_port=$(free_port)
mkdir -p "$work/nginx"
sed -e "s/127.0.0.1:8080/127.0.0.1:$tessera_port/g" -e "s/127.0.0.1:3000/127.0.0.1:$hello_port/g" \
  -e "s/127.0.0.1:8000/127.0.0.1:$protected_port/g" deploy/nginx.conf >"$work/nginx/site.conf"
cat >"$work/nginx/nginx.conf" <<CONF
daemon off;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  include $work/nginx/site.conf;
  server {
    listen 127.0.0.1:$plain_port;
    location / {
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://protected_app;
    }
  }
}
CONF
nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_up "http://127.0.0.1:$plain_port/"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
nginx_ticks() { # the master and its workers
  local total=0 pid
  for pid in $nginx_pid $(pgrep -P "$nginx_pid"); do total=$((total + $(cpu_ticks "$pid"))); done
  echo "$total"
}
hz=$(getconf CLK_TCK)
stats() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%s %s %s", a[1], a[int((NR + 1) / 2)], a[NR] }'; }
ratios() { paste -d' ' <(printf '%s\n' $1) <(printf '%s\n' $2) | awk '{ printf "%.2f\n", $1 / $2 }'; }

# run NAME URL TOKEN_FILE PATH → accumulates req/s and CPU ticks per process under NAME
declare -A rps requests t_tessera t_nginx t_hello
run() {
  local name=$1 url=$2 tokens=$3 path=$4 a b c out r n
  a=$(cpu_ticks "$tessera_pid") b=$(nginx_ticks) c=$(cpu_ticks "$hello_pid")
  out=$(TOKENS=$tokens WRK_PATH=$path wrk -t1 -c"$CONNECTIONS" -d"${ROUND_SECONDS}s" -s tools/wrk-tokens.lua "$url")
  r=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: $(grep Non-2xx <<<"$out")" >&2; fi
  rps[$name]+="$r " requests[$name]=$((${requests[$name]:-0} + n))
  t_tessera[$name]=$((${t_tessera[$name]:-0} + $(cpu_ticks "$tessera_pid") - a))
  t_nginx[$name]=$((${t_nginx[$name]:-0} + $(nginx_ticks) - b))
  t_hello[$name]=$((${t_hello[$name]:-0} + $(cpu_ticks "$hello_pid") - c))
}

cases=(hello me-many forward-many me-one forward-one nginx-plain nginx-protected)
for round in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((${#cases[@]} - 1))); do
    case=${cases[$(((round + i) % ${#cases[@]}))]}
    case $case in
      hello) run hello "http://127.0.0.1:$hello_port" "$work/tokens.txt" / ;;
      me-many) run me-many "$tessera_url" "$work/tokens.txt" /v1/users/me ;;
      forward-many) run forward-many "$tessera_url" "$work/tokens.txt" /v1/forward-auth ;;
      me-one) run me-one "$tessera_url" "$work/one-token.txt" /v1/users/me ;;
      forward-one) run forward-one "$tessera_url" "$work/one-token.txt" /v1/forward-auth ;;
      nginx-plain) run nginx-plain "http://127.0.0.1:$plain_port" "$work/tokens.txt" / ;;
      nginx-protected) run nginx-protected "http://127.0.0.1:$protected_port" "$work/tokens.txt" / ;;
    esac
  done
done

echo "## $ROUNDS rounds of ${ROUND_SECONDS}s, the cases back to back in each, order rotated"
printf '%-18s %28s %12s %12s %12s\n' case "req/s min / median / max" "tessera us" "nginx us" "upstream us"
for case in "${cases[@]}"; do
  read -r lo mid hi <<<"$(stats ${rps[$case]})"
  per() { awk -v t="$1" -v n="${requests[$case]}" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'; }
  printf '%-18s %28s %12s %12s %12s\n' "$case" "$lo / $mid / $hi" "$(per "${t_tessera[$case]}")" "$(per "${t_nginx[$case]}")" "$(per "${t_hello[$case]}")"
done
echo "(CPU time per request of each process, microseconds)"
echo
printf '%-48s %s\n' "ratio within a round" "min / median / max"
ratio() { # LABEL NUMERATOR DENOMINATOR TARGET
  read -r lo mid hi <<<"$(stats $(ratios "${rps[$2]}" "${rps[$3]}"))"
  printf '%-48s %s / %s / %s (target >= %s)\n' "$1" "$lo" "$mid" "$hi" "$4"
}
ratio "forward auth / me, one token" forward-one me-one 1.00
ratio "forward auth / me, $TOKEN_COUNT tokens" forward-many me-many 1.00
ratio "me, $TOKEN_COUNT tokens / hello-world" me-many hello 0.75
ratio "forward auth, $TOKEN_COUNT tokens / hello-world" forward-many hello 0.75
ratio "nginx protected / nginx plain, $TOKEN_COUNT tokens" nginx-protected nginx-plain 0.50

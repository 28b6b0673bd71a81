#!/usr/bin/env bash
# End-to-end benchmarks, side by side in one run (BENCHMARKS.md). Not a test: nothing here
# asserts; it prints tables. Client and servers share this machine's cores.
#
#   bash tools/bench-e2e.sh                 # throughput, isolation, memory (≈ 7 min)
#   SCALE=1 bash tools/bench-e2e.sh         # also 1,000,000 users and denylist pruning (≈ +5 min)
#
#   PIN=1 bash tools/bench-e2e.sh           # servers on CPU 0, wrk on CPU 1: no shared cores
#
# Tessera runs as users run it: defaults, request log on (`info`, to a file). A second Tessera
# on the same database with RUST_LOG=warn shows what the log costs: in the rounds, and side by
# side, the two loaded at the same moment (SIDE_BY_SIDE times ROUND_SECONDS). The machine's CPU model,
# hello-world's req/s and each server's CPU time per request are printed so runs on two
# machines can be compared; tools/bench-callgrind.sh adds instructions per request, the line
# that does not depend on the machine (CALLGRIND=0 skips it).
#
# Knobs: ROUNDS (10) of ROUND_SECONDS (3) for /me; RUNS (3) of DURATION seconds (10) for the
# login storms and the scale runs; SIDE_BY_SIDE (10) runs of the log's side-by-side
# comparison; CONNECTIONS (32); PIN (0); CALLGRIND (1).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
ROUNDS=${ROUNDS:-10}
ROUND_SECONDS=${ROUND_SECONDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
SCALE=${SCALE:-0}
PIN=${PIN:-0}
CALLGRIND=${CALLGRIND:-1}
SIDE_BY_SIDE=${SIDE_BY_SIDE:-10}
PASSWORD='correct horse battery staple'

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
# shellcheck source=tools/bench-common.sh
source tools/bench-common.sh
build_release hello stateless hash_rate bulk_seed
bin=target/release
# PIN=1 gives the servers (and the direct-hashing baseline) one core and the load generator the
# other, so the client's CPU no longer comes out of the server's. Every `wrk` below is pinned.
server_cpus=() client_cpus=()
if [ "$PIN" = 1 ]; then server_cpus=(taskset -c 0) client_cpus=(taskset -c 1); fi
wrk() { "${client_cpus[@]}" "$(type -P wrk)" "$@"; }

# start_tessera NAME DB [flags…]: starts a server, sets TESSERA_PID and TESSERA_URL. Logging is
# the default (`info`: one line per request) unless TESSERA_RUST_LOG says otherwise. It runs
# under `launch`: the servers' CPUs unless a caller says otherwise.
launch=("${server_cpus[@]}")
start_tessera() {
  local name=$1 db=$2; shift 2
  local port; port=$(free_port)
  RUST_LOG=${TESSERA_RUST_LOG:-info} "${launch[@]}" "$bin/tessera" serve --listen "127.0.0.1:$port" --db "$db" --keys "$work/jwks.json" \
    --login-rate 0 --register-rate 0 "$@" 2>"$work/$name.log" &
  TESSERA_PID=$!
  pids+=("$TESSERA_PID")
  TESSERA_URL="http://127.0.0.1:$port"
  wait_up "$TESSERA_URL/healthz"
}

token_for() { # URL USERNAME
  curl -s -X POST "$1/v1/sessions" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$2\",\"password\":\"$PASSWORD\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}

register() { # URL USERNAME
  curl -s -o /dev/null -X POST "$1/v1/users" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$2\",\"full_name\":\"Bench User\",\"password\":\"$PASSWORD\",\"mothers_favorite_search_engine\":\"Searx\"}"
}

# wrk_run URL [wrk args…] → "requests_per_second p50_ms p99_ms requests"
wrk_run() {
  local url=$1; shift
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" | awk '
    /Requests\/sec/ { rps = $2 } /requests in/ { n = $1 }
    /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    END { printf "%.0f %.3f %.3f %d\n", rps, ms(p50), ms(p99), n }'
}

# CPU time a process has used, user + system, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

stats() { # numbers… → "min median max"
  printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%s %s %s", a[1], a[int((NR + 1) / 2)], a[NR] }'
}
stats_row() { # LABEL TARGET NUMBERS… → "LABEL min / median / max (target >= TARGET)"
  local label=$1 target=$2 lo mid hi; shift 2
  read -r lo mid hi <<<"$(stats "$@")"
  printf '%-44s %s / %s / %s%s\n' "$label" "$lo" "$mid" "$hi" "${target:+ (target >= $target)}"
}

peak_rss_kib() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "cpu: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)$(grep -qw sha_ni /proc/cpuinfo && echo ', SHA-NI')"
echo "rustc: $(rustc --version)"
if [ "$PIN" = 1 ]; then
  echo "wrk: -t1 -c$CONNECTIONS; servers pinned to CPU 0, wrk to CPU 1"
else
  echo "wrk: -t1 -c$CONNECTIONS; client and servers share the cores"
fi
echo

"$bin/tessera" keys generate --keys "$work/jwks.json" >/dev/null

# ---------------------------------------------------------------- 2. end to end
start_tessera main "$work/main.db"
main_pid=$TESSERA_PID main_url=$TESSERA_URL
register "$main_url" bench
token=$(token_for "$main_url" bench)
TESSERA_RUST_LOG=warn start_tessera quiet "$work/main.db"
quiet_pid=$TESSERA_PID quiet_url=$TESSERA_URL
hello_port=$(free_port)
"${server_cpus[@]}" "$bin/examples/hello" "127.0.0.1:$hello_port" 2>/dev/null & pids+=($!)
hello_pid=$!
stateless_port=$(free_port)
"${server_cpus[@]}" "$bin/examples/stateless" "127.0.0.1:$stateless_port" "$work/jwks.json" 2>/dev/null & pids+=($!)
stateless_pid=$!
wait_up "http://127.0.0.1:$hello_port/"
wait_up "http://127.0.0.1:$stateless_port/v1/users/me"
idle_rss=$(rss_kib "$main_pid")

# Many short rounds, the servers back to back in each, the order rotated every round: the
# machine's speed drifts between rounds (shared hardware) but hardly within one, so the ratios
# are taken within each round and the verdict uses their median.
servers=(hello stateless tessera tessera-warn)
declare -A rps p50 p99 requests ticks
for round in $(seq 1 "$ROUNDS"); do
  for i in 0 1 2 3; do
    server=${servers[$(((round + i) % 4))]}
    case $server in
      hello) url="http://127.0.0.1:$hello_port/" pid=$hello_pid ;;
      stateless) url="http://127.0.0.1:$stateless_port/v1/users/me" pid=$stateless_pid ;;
      tessera) url="$main_url/v1/users/me" pid=$main_pid ;;
      tessera-warn) url="$quiet_url/v1/users/me" pid=$quiet_pid ;;
    esac
    before=$(cpu_ticks "$pid")
    read -r r a b n < <(DURATION=$ROUND_SECONDS wrk_run "$url" -H "Authorization: Bearer $token")
    after=$(cpu_ticks "$pid")
    rps[$server]+="$r " p50[$server]+="$a " p99[$server]+="$b "
    requests[$server]=$((${requests[$server]:-0} + n)) ticks[$server]=$((${ticks[$server]:-0} + after - before))
  done
done
me_rss=$(peak_rss_kib "$main_pid")
echo "## End to end: GET /v1/users/me (valid token, revocation checked), $ROUNDS rounds of ${ROUND_SECONDS}s"
echo "tessera: defaults, one log line per request (info); tessera-warn: the same with RUST_LOG=warn"
printf '%-16s %28s %9s %9s %14s\n' server "req/s min / median / max" "p50 ms" "p99 ms" "CPU us/req"
for server in "${servers[@]}"; do
  read -r lo mid hi <<<"$(stats ${rps[$server]})"
  read -r _ a _ <<<"$(stats ${p50[$server]})"
  read -r _ b _ <<<"$(stats ${p99[$server]})"
  cpu=$(awk -v t="${ticks[$server]}" -v n="${requests[$server]}" -v hz="$ticks_per_second" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  printf '%-16s %28s %9s %9s %14s\n' "$server" "$lo / $mid / $hi" "$a" "$b" "$cpu"
done
per_round_ratios() { # NUMERATORS DENOMINATORS
  paste -d' ' <(printf '%s\n' $1) <(printf '%s\n' $2) | awk '{ printf "%.2f\n", $1 / $2 }'
}
printf '%-44s %s\n' "ratio within a round" "min / median / max"
report_ratio() { # LABEL NUMERATOR DENOMINATOR [TARGET]
  stats_row "$1" "${4:-}" $(per_round_ratios "${rps[$2]}" "${rps[$3]}")
}
report_ratio "tessera / hello-world" tessera hello 0.70
report_ratio "tessera / stateless peer" tessera stateless 1.00
report_ratio "tessera-warn / hello-world" tessera-warn hello
report_ratio "tessera-warn / stateless peer" tessera-warn stateless
report_ratio "tessera / tessera-warn (log cost)" tessera tessera-warn
# The log's cost side by side: a Tessera with its defaults and one with RUST_LOG=warn, loaded at
# the same moment, each by its own wrk with half the connections, so a swing in the machine's
# speed, which on shared hardware comes from one second to the next, reaches both alike. They
# differ by a few per cent, which rounds taken seconds apart cannot resolve (BENCHMARKS.md, "The
# request log"); this is the log's verdict.
# In both modes the two share CPU 0 and the clients CPU 1, and each server runs in a session of
# its own, so the scheduler gives each the same share of CPU 0 on average, however many threads
# each has. Only on average: within a pair two identical servers' shares differ by up to 6%, so
# the verdict is requests per CPU-second of each server's own threads (BENCHMARKS.md, "The request
# log"); the req/s ratio is printed beside it.
launch=(taskset -c 0 setsid)
start_tessera side-on "$work/main.db"
side_on_pid=$TESSERA_PID side_on_url=$TESSERA_URL
TESSERA_RUST_LOG=warn start_tessera side-off "$work/main.db"
side_off_pid=$TESSERA_PID side_off_url=$TESSERA_URL
launch=("${server_cpus[@]}")
saved_client_cpus=("${client_cpus[@]}")
client_cpus=(taskset -c 1)
# cpu_ns PID: the CPU time the process's threads have had, in nanoseconds (schedstat's first
# field; /proc/PID/stat counts in 10 ms ticks, too coarse for a few seconds).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ ns += $1 } END { printf "%.0f", ns }'; }
log_ratios=() log_cpu_ratios=() log_shares=()
for _ in $(seq 1 "$SIDE_BY_SIDE"); do
  on_cpu=$(cpu_ns "$side_on_pid") off_cpu=$(cpu_ns "$side_off_pid")
  CONNECTIONS=$((CONNECTIONS / 2)) DURATION=$ROUND_SECONDS wrk_run "$side_on_url/v1/users/me" -H "Authorization: Bearer $token" >"$work/side-on.txt" &
  on=$!
  CONNECTIONS=$((CONNECTIONS / 2)) DURATION=$ROUND_SECONDS wrk_run "$side_off_url/v1/users/me" -H "Authorization: Bearer $token" >"$work/side-off.txt" &
  off=$!
  wait "$on" "$off"
  on_cpu=$(($(cpu_ns "$side_on_pid") - on_cpu)) off_cpu=$(($(cpu_ns "$side_off_pid") - off_cpu))
  # On over off: the CPU split, req/s, and requests per CPU-second — each server's own CPU
  # time, whatever share of CPU 0 the scheduler gave it.
  read -r share rps_ratio cpu_ratio < <(paste -d' ' "$work/side-on.txt" "$work/side-off.txt" |
    awk -v on="$on_cpu" -v off="$off_cpu" '{ printf "%.3f %.3f %.3f\n", on / off, $1 / $5, ($4 / on) / ($8 / off) }')
  log_shares+=("$share") log_ratios+=("$rps_ratio") log_cpu_ratios+=("$cpu_ratio")
done
client_cpus=("${saved_client_cpus[@]}")
kill "$side_on_pid" "$side_off_pid"
echo "The log side by side on one CPU, $SIDE_BY_SIDE pairs of ${ROUND_SECONDS}s (min / median / max):"
stats_row "  CPU time, defaults / RUST_LOG=warn" "" "${log_shares[@]}"
stats_row "  req/s, defaults / RUST_LOG=warn" "" "${log_ratios[@]}"
stats_row "  log cost: requests per CPU-second" 0.95 "${log_cpu_ratios[@]}"
echo

# ---------------------------------------------------------------- 3. isolation
cat >"$work/login.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"username":"bench","password":"$PASSWORD"}'
wrk.headers["Content-Type"] = "application/json"
EOF
# The storm logs in 64 accounts in turn. One account would meet its own softlock: since guesses
# are reserved before hashing, more concurrent logins of one account than its
# free attempts get 429s, and a storm of fast 429s measured the softlock, not the hashing.
for i in $(seq 0 63); do register "$main_url" "storm$i"; done
cat >"$work/storm.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"username":"storm' .. (n % 64) .. '","password":"$PASSWORD"}')
end
EOF
# A steady /me load: each of 8 connections waits 2 ms between requests (≤ 4,000 req/s, a few
# per cent of what the server sustains). wrk starts its clock after the pause, so latency is
# the server's answer time only.
echo 'function delay() return 2 end' >"$work/paced.lua"
# Successful logins per second: all requests minus non-2xx (503s of a full queue), over the run.
ok_rate() { awk -v d="$2" '/requests in/ { n = $1 } /Non-2xx/ { bad = $5 } END { printf "%.1f", (n - bad) / d }' "$1"; }
# wrk's default 2 s timeout would abandon queued logins and open new connections, piling
# more logins into the queue than 64 clients can have in flight: give them time instead.
storm_duration=$((DURATION + 2))
# storm_with_me [wrk args for the /me load…] → "me_p99_ms logins_per_s non2xx"
storm_with_me() {
  wrk -t1 -c64 -d"${storm_duration}s" --timeout 30s -s "$work/storm.lua" "$main_url/v1/sessions" >"$work/storm.txt" &
  local storm=$! p99
  sleep 1
  read -r _ _ p99 _ < <(CONNECTIONS=8 wrk_run "$main_url/v1/users/me" -H "Authorization: Bearer $token" "$@")
  wait "$storm"
  echo "$p99 $(ok_rate "$work/storm.txt" "$storm_duration") $(awk '/Non-2xx/ { n = $5 } END { print n + 0 }' "$work/storm.txt")"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
permits=$("${server_cpus[@]}" nproc)
declare -A iso
non2xx_total=0
# The machine's speed drifts by 10-20% over tens of seconds (shared hardware), so each storm is
# compared with direct hashing measured just before and just after it: the mean of the two.
direct_rate() { # a second's pause first, for the server's last in-flight hashes to finish
  sleep 1
  "${server_cpus[@]}" "$bin/examples/hash_rate" "$permits" "$DURATION"
}
mean() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (a + b) / 2 }'; }
for run in $(seq 1 "$RUNS"); do
  read -r _ _ idle _ < <(CONNECTIONS=8 wrk_run "$main_url/v1/users/me" -H "Authorization: Bearer $token" -s "$work/paced.lua")
  d0=$(direct_rate)
  read -r storm paced_logins n1 < <(storm_with_me -s "$work/paced.lua")
  iso[steady_idle]+="$idle " iso[steady_storm]+="$storm " iso[steady_ratio]+="$(ratio "$storm" "$idle") "
  d1=$(direct_rate)
  read -r _ _ idle _ < <(CONNECTIONS=8 wrk_run "$main_url/v1/users/me" -H "Authorization: Bearer $token")
  read -r storm flood_logins n2 < <(storm_with_me)
  iso[flood_idle]+="$idle " iso[flood_storm]+="$storm " iso[flood_ratio]+="$(ratio "$storm" "$idle") "
  d2=$(direct_rate)
  # The storm with nothing else running.
  wrk -t1 -c64 -d"${DURATION}s" --timeout 30s -s "$work/storm.lua" "$main_url/v1/sessions" >"$work/storm-alone.txt"
  alone_logins=$(ok_rate "$work/storm-alone.txt" "$DURATION")
  d3=$(direct_rate)
  iso[direct]+="$d0 $d1 $d2 $d3 "
  iso[steady_logins]+="$(ratio "$paced_logins" "$(mean "$d0" "$d1")") "
  iso[flood_logins]+="$(ratio "$flood_logins" "$(mean "$d1" "$d2")") "
  iso[alone]+="$(ratio "$alone_logins" "$(mean "$d2" "$d3")") "
  non2xx_total=$((non2xx_total + n1 + n2))
done
storm_rss=$(peak_rss_kib "$main_pid")
echo "## Isolation: /me (8 connections) while 64 connections loop on POST /v1/sessions, $RUNS runs"
printf '%-58s %s\n' "" "min / median / max"
iso_row() { printf '%-58s %s\n' "$1" "$(stats ${iso[$2]} | sed 's/ / \/ /g')"; }
iso_row "direct verifications/s, hashing threads: $permits" direct
iso_row "logins / direct, the storm alone" alone
echo "steady /me load (2 ms pause per connection, ~3,500 req/s):"
iso_row "  /me p99 idle, ms" steady_idle
iso_row "  /me p99 during the storm, ms" steady_storm
iso_row "  p99 storm / idle (target <= 3.0)" steady_ratio
iso_row "  logins / direct (target >= 0.85)" steady_logins
echo "/me flood (no pause: every core busy):"
iso_row "  /me p99 idle, ms" flood_idle
iso_row "  /me p99 during the storm, ms" flood_storm
iso_row "  p99 storm / idle" flood_ratio
iso_row "  logins / direct" flood_logins
echo "non-2xx login answers (503s of a full queue) across all storms: $non2xx_total"
echo

# ---------------------------------------------------------------- 5. memory
echo "## Memory (one tessera process)"
echo "RSS idle: $((idle_rss / 1024)) MiB; peak under /me load: $((me_rss / 1024)) MiB; peak after the login storm: $((storm_rss / 1024)) MiB"
echo "bound: base + permits x argon2 memory = idle + $permits x 19 MiB = $(( idle_rss / 1024 + permits * 19 )) MiB"
echo

# ---------------------------------------------------------------- instructions per request
if [ "$CALLGRIND" = 1 ]; then
  echo
  echo "## Instructions per request (callgrind; the same on any machine)"
  BIN=$bin bash tools/bench-callgrind.sh
fi
echo
if [ "$SCALE" != 1 ]; then
  echo "(SCALE=1 adds the 1,000,000-user and pruning measurements)"
  exit 0
fi

# ---------------------------------------------------------------- 4. scale
measure_scale() { # USERS DENYLIST → "me_p50 me_p99 login_p50 login_p99"
  local db="$work/scale-$1.db"
  "$bin/examples/bulk_seed" "$db" "$1" "$2" >/dev/null
  start_tessera "scale-$1" "$db"
  local url=$TESSERA_URL pid=$TESSERA_PID t
  t=$(token_for "$url" user0)
  read -r _ mp50 mp99 _ < <(wrk_run "$url/v1/users/me" -H "Authorization: Bearer $t")
  sed -i 's/"username":"bench"/"username":"user0"/' "$work/login.lua"
  read -r _ lp50 lp99 _ < <(CONNECTIONS=2 wrk_run "$url/v1/sessions" -s "$work/login.lua")
  sed -i 's/"username":"user0"/"username":"bench"/' "$work/login.lua"
  kill "$pid"
  echo "$mp50 $mp99 $lp50 $lp99"
}
echo "## Scale: latency at 1,000 users vs 1,000,000 users + 100,000 live denylist rows"
read -r s_mp50 s_mp99 s_lp50 s_lp99 < <(measure_scale 1000 0)
read -r l_mp50 l_mp99 l_lp50 l_lp99 < <(measure_scale 1000000 100000)
printf '%-28s %10s %10s %12s %12s\n' "" "/me p50" "/me p99" "login p50" "login p99"
printf '%-28s %10s %10s %12s %12s\n' "1,000 users" "$s_mp50" "$s_mp99" "$s_lp50" "$s_lp99"
printf '%-28s %10s %10s %12s %12s\n' "1,000,000 users + 100k deny" "$l_mp50" "$l_mp99" "$l_lp50" "$l_lp99"
awk -v a="$s_mp50" -v b="$l_mp50" -v c="$s_lp50" -v d="$l_lp50" 'BEGIN {
  printf "large / small: /me p50 %.2f, login p50 %.2f (target <= 1.2)\n", b / a, d / c }'
echo

echo "## Pruning: denylist size while 60-second tokens expire (prune every 5 s)"
start_tessera prune "$work/prune.db" --token-ttl 60 --leeway 0 --prune-interval 5
register "$TESSERA_URL" bench
for _ in $(seq 1 200); do
  t=$(token_for "$TESSERA_URL" bench)
  curl -s -o /dev/null -X DELETE "$TESSERA_URL/v1/sessions/current" -H "Authorization: Bearer $t"
done
for second in 0 20 40 60 70 80; do
  sleep $(( second == 0 ? 0 : (second <= 60 ? 20 : 10) ))
  rows=$("$bin/tessera" db dump --db "$work/prune.db" | grep -c '^INSERT INTO "revoked_tokens"' || true)
  echo "t=${second}s denylist rows: $rows"
done

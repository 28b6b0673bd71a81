#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster from Debian's packages: `initdb` in a temporary folder,
# listening on a loopback port only, run as the unprivileged `postgres` user (PostgreSQL refuses
# to run as root). Installs the packages if missing.
#
#   eval "$(bash tools/postgres-throwaway.sh)"     # exports TESSERA_TEST_POSTGRES, PGPASSWORD
#                                                  # and PG_THROWAWAY (the folder; stop with
#                                                  # `bash tools/postgres-throwaway.sh stop`)
#
# The role `tessera` gets a random password (scram-sha-256), handed over in PGPASSWORD so no
# URL carries it and no argv shows it.
set -euo pipefail

if [ "${1:-}" = stop ]; then
  dir=${PG_THROWAWAY:?PG_THROWAWAY is not set}
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  exit 0
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
dir=$(mktemp -d /tmp/tessera-pg.XXXXXX)
chown postgres "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$password" >"$dir/pwfile"
chown postgres "$dir/pwfile"
chmod 600 "$dir/pwfile"
runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U tessera --pwfile="$dir/pwfile" \
  --auth-host=scram-sha-256 --auth-local=scram-sha-256 >/dev/null
rm -f "$dir/pwfile"
# In the configuration file, not on pg_ctl's command line: a restart (`pg_ctl start`, as the
# replica tests do) must come back on the same loopback port.
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
CONF
runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
echo "export PG_THROWAWAY=$dir"
echo "export PGPASSWORD=$password"
echo "export TESSERA_TEST_POSTGRES=postgres://tessera@127.0.0.1:$port"

# Shared by scripts/test.sh and bench/run.sh: package installation and throwaway servers.
# Source it; call jobq_install_packages PKG..., then jobq_start_servers (sets JOBQ_TEST_* vars
# and a trap that stops the servers and removes their directory on exit).

jobq_install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "== installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

free_port() {
  local p
  for p in $(shuf -i 20000-45000 -n 200); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free loopback port found" >&2; return 1
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

SERVERS_DIR=""
jobq_stop_servers() {
  set +e
  if [ -n "$SERVERS_DIR" ]; then
    [ -f "$SERVERS_DIR/pg/data/postmaster.pid" ] &&
      as_postgres "$PG_BIN/pg_ctl" -D "$SERVERS_DIR/pg/data" -m immediate stop >/dev/null 2>&1
    [ -f "$SERVERS_DIR/redis/redis.pid" ] && kill "$(cat "$SERVERS_DIR/redis/redis.pid")" 2>/dev/null
    sleep 0.2
    rm -rf "$SERVERS_DIR"
  fi
}
trap jobq_stop_servers EXIT

jobq_start_servers() {
  SERVERS_DIR="$(mktemp -d /tmp/jobq-test.XXXXXX)"
  chmod 755 "$SERVERS_DIR"

  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL server binaries not found" >&2; exit 1; }
  local pg_port; pg_port="$(free_port)"
  mkdir -p "$SERVERS_DIR/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$SERVERS_DIR/pg"
  as_postgres "$PG_BIN/initdb" -D "$SERVERS_DIR/pg/data" -A trust -U postgres >/dev/null
  as_postgres "$PG_BIN/pg_ctl" -D "$SERVERS_DIR/pg/data" -w -l "$SERVERS_DIR/pg/log" \
    -o "-p $pg_port -k $SERVERS_DIR/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=${JOBQ_PG_FSYNC:-off}" \
    start >/dev/null
  export JOBQ_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres"
  cat >"$SERVERS_DIR/pg-restart.sh" <<EOS
#!/usr/bin/env bash
# Immediate restart (like a crash), keeping the same port and data dir.
if [ "\$(id -u)" -eq 0 ]; then R="runuser -u postgres --"; else R=""; fi
\$R "$PG_BIN/pg_ctl" -D "$SERVERS_DIR/pg/data" -m immediate -w -l "$SERVERS_DIR/pg/log" restart >/dev/null
EOS
  chmod +x "$SERVERS_DIR/pg-restart.sh"
  export JOBQ_TEST_POSTGRES_RESTART="$SERVERS_DIR/pg-restart.sh"

  local redis_port; redis_port="$(free_port)"
  mkdir -p "$SERVERS_DIR/redis"
  local redis_args="--port $redis_port --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec --dir $SERVERS_DIR/redis --pidfile $SERVERS_DIR/redis/redis.pid --logfile $SERVERS_DIR/redis/log --daemonize yes"
  cat >"$SERVERS_DIR/redis-start.sh" <<EOS
#!/usr/bin/env bash
redis-server $redis_args
for i in \$(seq 1 100); do redis-cli -p $redis_port ping >/dev/null 2>&1 && exit 0; sleep 0.05; done
echo "redis did not start" >&2; exit 1
EOS
  cat >"$SERVERS_DIR/redis-restart.sh" <<EOS
#!/usr/bin/env bash
# Stop without a final save (appendonly keeps what was written), then start again.
redis-cli -p $redis_port shutdown nosave >/dev/null 2>&1 || true
for i in \$(seq 1 100); do [ -f "$SERVERS_DIR/redis/redis.pid" ] || break; sleep 0.05; done
exec "$SERVERS_DIR/redis-start.sh"
EOS
  chmod +x "$SERVERS_DIR/redis-start.sh" "$SERVERS_DIR/redis-restart.sh"
  "$SERVERS_DIR/redis-start.sh"
  export JOBQ_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
  export JOBQ_TEST_REDIS_RESTART="$SERVERS_DIR/redis-restart.sh"
  echo "== servers: $JOBQ_TEST_POSTGRES_URL  $JOBQ_TEST_REDIS_URL"
}


#!/usr/bin/env bash
# Runs every workload on every backend against throwaway servers on loopback (started the same
# way the tests start them), 3 repetitions each, plus the raw server limits for context:
# pgbench (one-row FOR UPDATE SKIP LOCKED claim+complete at 16 clients; single-client INSERT)
# and redis-benchmark (lpush, rpop, zadd, unpipelined, 50 clients; lpush from 1 client). Prints
# JSON lines, then a table of medians.
# Usage: bench/run.sh [reps] [scale]   (JOBQ_BENCH_BACKENDS="postgres redis": a subset)
# W6 and W3 --processes are not part of this run (jobq-bench runs W6 only when named: at scale 1
# it passes 10,000,000 jobs through each store); see docs/performance.md for their commands.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPS="${1:-3}"
SCALE="${2:-1}"
# shellcheck source=../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
jobq_install_packages build-essential cmake ninja-build pkg-config nlohmann-json3-dev libhowardhinnant-date-dev tzdata catch2 \
  libbenchmark-dev libcli11-dev libsqlite3-dev libpq-dev postgresql libhiredis-dev redis-server
JOBQ_PG_FSYNC=on jobq_start_servers

BUILD="$ROOT/build/bench"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DJOBQ_BUILD_TESTS=OFF \
  -DJOBQ_BUILD_EXAMPLES=OFF -DJOBQ_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD" --target jobq-bench >/dev/null
OUT="$(mktemp /tmp/jobq-bench.XXXXXX.jsonl)"

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
for backend in ${JOBQ_BENCH_BACKENDS:-memory sqlite postgres redis}; do
  case "$backend" in
    postgres) url="$JOBQ_TEST_POSTGRES_URL" ;;
    redis) url="$JOBQ_TEST_REDIS_URL" ;;
    *) url="" ;;
  esac
  echo "== $backend"
  "$BUILD/bench/jobq-bench" --backend "$backend" --url "$url" --reps "$REPS" --scale "$SCALE" | tee -a "$OUT"
done

echo "== raw server limits"
PGURL="$JOBQ_TEST_POSTGRES_URL"
psql -q "$PGURL" <<'SQL'
DROP TABLE IF EXISTS bench_raw;
CREATE TABLE bench_raw (id bigserial PRIMARY KEY, state text NOT NULL, payload text NOT NULL);
INSERT INTO bench_raw (state, payload) SELECT 'queued', '{"i":1}' FROM generate_series(1, 400000);
CREATE INDEX bench_raw_ready ON bench_raw (id) WHERE state = 'queued';
VACUUM ANALYZE bench_raw;
SQL
cat >"$SERVERS_DIR/claim.sql" <<'SQL'
WITH c AS (SELECT id FROM bench_raw WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE bench_raw b SET state = 'active' FROM c WHERE b.id = c.id RETURNING b.id AS claimed \gset
UPDATE bench_raw SET state = 'done' WHERE id = :claimed;
SQL
echo "INSERT INTO bench_raw (state, payload) VALUES ('queued', '{\"i\":1}');" >"$SERVERS_DIR/insert.sql"
for rep in $(seq 1 "$REPS"); do
  tps=$(pgbench -n -c 16 -j 2 -T 10 -f "$SERVERS_DIR/claim.sql" "$PGURL" 2>/dev/null | awk '/^tps/ {print $3; exit}')
  echo "{\"backend\":\"pgbench\",\"workload\":\"claim+complete c=16\",\"rep\":$rep,\"tps\":$tps}" | tee -a "$OUT"
  tps=$(pgbench -n -c 1 -T 10 -f "$SERVERS_DIR/insert.sql" "$PGURL" 2>/dev/null | awk '/^tps/ {print $3; exit}')
  echo "{\"backend\":\"pgbench\",\"workload\":\"insert c=1\",\"rep\":$rep,\"tps\":$tps}" | tee -a "$OUT"
done
RPORT="${JOBQ_TEST_REDIS_URL##*:}"; RPORT="${RPORT%%/*}"
# redis_rates REP CLIENTS TESTS N: one JSON line per command, labelled with the client count.
redis_rates() {
  redis-benchmark -p "$RPORT" -t "$3" -n "$4" -c "$2" -P 1 --csv 2>/dev/null |
    awk -F'"' -v rep="$1" -v c="$2" 'NR>1 {print "{\"backend\":\"redis-benchmark\",\"workload\":\"" $2 " c=" c "\",\"rep\":" rep ",\"tps\":" $4 "}"}' | tee -a "$OUT"
}
for rep in $(seq 1 "$REPS"); do
  redis_rates "$rep" 50 lpush,rpop,zadd 100000
  # For context beside W1 (one client waiting for each reply): the same LPUSH from one client.
  redis_rates "$rep" 1 lpush 20000
done

echo "== medians ($REPS repetitions)"
"$BUILD/bench/jobq-bench" --backend memory --table "$OUT"

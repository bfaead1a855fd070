#!/usr/bin/env bash
# Runs the chaos harness by hand against throwaway servers (started like scripts/test.sh does).
#   tests/chaos/run.sh --backend postgres --jobs 100000 [other jobq-chaos driver options]
#   tests/chaos/run.sh --backend sqlite --jobs 100000 --workers 4
#   tests/chaos/run.sh --backend redis --jobs 20000 --max-attempts 1 --restarts 12
# Builds jobq-chaos in $JOBQ_CHAOS_BUILD (default build/chaos). PostgreSQL runs with fsync on
# unless JOBQ_PG_FSYNC=off. Servers given through JOBQ_TEST_* variables are used as they are.
# Prints the driver's JSON summary line; exits with its status (0: every invariant held).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${JOBQ_CHAOS_BUILD:-$ROOT/build/chaos}"
export JOBQ_PG_FSYNC="${JOBQ_PG_FSYNC:-on}"

backend=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[$i]}" = "--backend" ] && backend="${args[$((i + 1))]:-}"
done
[ -n "$backend" ] || { echo "usage: $0 --backend sqlite|postgres|redis|memory [--jobs N] [driver options]" >&2; exit 2; }

# shellcheck source=../../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
jobq_install_packages build-essential cmake ninja-build pkg-config nlohmann-json3-dev catch2 \
  libsqlite3-dev libpq-dev postgresql libhiredis-dev redis-server libhowardhinnant-date-dev tzdata libcli11-dev

if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJOBQ_BUILD_TESTS=ON \
    -DJOBQ_BUILD_BENCH=OFF -DJOBQ_BUILD_EXAMPLES=OFF \
    -DJOBQ_WITH_SQLITE=ON -DJOBQ_WITH_POSTGRES=ON -DJOBQ_WITH_REDIS=ON >/dev/null
fi
cmake --build "$BUILD" --target jobq-chaos -j "${JOBS:-2}" >&2

case "$backend" in
  postgres) [ -n "${JOBQ_TEST_POSTGRES_URL:-}" ] || jobq_start_servers >&2 ;;
  redis) [ -n "${JOBQ_TEST_REDIS_URL:-}" ] || jobq_start_servers >&2 ;;
esac
set +e
"$BUILD/tests/chaos/jobq-chaos" driver "$@"
rc=$?
exit $rc

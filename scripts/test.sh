#!/usr/bin/env bash
# Runs jobq's whole test suite: installs what is missing (as root, Debian), starts throwaway
# PostgreSQL and Redis servers on free loopback ports in a temp dir, then builds and runs ctest
# in three configurations: warnings-as-errors, ASan+UBSan, and TSan (worker/conformance tests).
# Usage: scripts/test.sh [default|asan|tsan ...]   (no argument: all three)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIGS=("$@")
[ ${#CONFIGS[@]} -eq 0 ] && CONFIGS=(default asan tsan)
JOBS="${JOBS:-$(nproc)}"

PACKAGES=(build-essential cmake ninja-build pkg-config nlohmann-json3-dev catch2 libbenchmark-dev
  libsqlite3-dev libpq-dev postgresql libhiredis-dev redis-server
  libhowardhinnant-date-dev libcli11-dev libcpp-httplib-dev chromium chromium-driver)

# shellcheck source=lib.sh
source "$ROOT/scripts/lib.sh"

run_config() {
  local name="$1" flags="" build_type="Debug" ctest_args=() extra=()
  case "$name" in
    default) build_type="RelWithDebInfo" ;;
    asan) flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" ;;
    # TSan runs the thread-heavy programs (label tsan); programs it does not run are not built.
    tsan) flags="-fsanitize=thread -O1"; ctest_args=(-L tsan)
      extra=(-DJOBQ_BUILD_BENCH=OFF -DJOBQ_BUILD_EXAMPLES=OFF -DJOBQ_BUILD_TOOLS=OFF) ;;
    *) echo "unknown configuration '$name'" >&2; exit 2 ;;
  esac
  local dir="$ROOT/build/ci-$name"
  echo "== [$name] configure + build"
  cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" \
    -DCMAKE_CXX_FLAGS="$flags" -DJOBQ_WARNINGS_AS_ERRORS=ON \
    -DJOBQ_WITH_SQLITE=ON -DJOBQ_WITH_POSTGRES=ON -DJOBQ_WITH_REDIS=ON -DJOBQ_WITH_HTTP=ON "${extra[@]}" >/dev/null
  cmake --build "$dir" -j "$JOBS"
  echo "== [$name] ctest"
  (cd "$dir" && UBSAN_OPTIONS=print_stacktrace=1 TSAN_OPTIONS="second_deadlock_stack=1" \
    ctest --output-on-failure -j "$JOBS" "${ctest_args[@]}")
}

jobq_install_packages "${PACKAGES[@]}"
jobq_start_servers
for c in "${CONFIGS[@]}"; do run_config "$c"; done

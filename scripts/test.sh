#!/usr/bin/env bash
# Runs jobq's whole test suite: installs what is missing (as root, Debian), starts throwaway
# PostgreSQL and Redis servers on free loopback ports in a temp dir, then builds (-Werror) and runs
# ctest in two configurations: every test under ASan+UBSan, and the thread-heavy ones (label tsan:
# worker, conformance) under TSan; then runs each libFuzzer target (clang) for FUZZ_SECONDS
# (default 30) from its seed corpus.
# Usage: scripts/test.sh [default|asan|tsan|fuzz ...]   (no argument: asan tsan fuzz)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIGS=("$@")
# The full suite runs once, under ASan+UBSan with -Werror (a separate unsanitized build of the same
# tests would double the CI time and find nothing they do not); "default" (RelWithDebInfo, no
# sanitizers) remains available by name.
[ ${#CONFIGS[@]} -eq 0 ] && CONFIGS=(asan tsan fuzz)
JOBS="${JOBS:-$(nproc)}"

PACKAGES=(build-essential cmake ninja-build pkg-config nlohmann-json3-dev catch2 libbenchmark-dev
  libsqlite3-dev libpq-dev postgresql libhiredis-dev redis-server
  libhowardhinnant-date-dev tzdata libcli11-dev libcpp-httplib-dev chromium chromium-driver clang)

# shellcheck source=lib.sh
source "$ROOT/scripts/lib.sh"

run_config() {
  local name="$1" flags="" build_type="Debug" ctest_args=() extra=()
  case "$name" in
    default) build_type="RelWithDebInfo" ;;
    asan) flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" ;;
    # TSan runs the thread-heavy programs (label tsan); programs it does not run are not built.
    tsan) flags="-fsanitize=thread -O1"; ctest_args=(-L tsan)
      extra=(-DJOBQ_BUILD_BENCH=OFF -DJOBQ_BUILD_EXAMPLES=OFF -DJOBQ_BUILD_TOOLS=OFF -DJOBQ_TEST_ONLY_LABEL=tsan) ;;
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

# libFuzzer targets built with clang (tests/fuzz); each runs for a bounded time from a copy of its
# seed corpus and its regression inputs (the url target's planted-password templates are there).
# A crash fails the run and leaves its input in build/ci-fuzz/artifacts: fix it and add the input to tests/fuzz/regressions/<target>/ (every configuration replays those).
run_fuzz() {
  local dir="$ROOT/build/ci-fuzz" t
  echo "== [fuzz] configure + build (clang)"
  cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DJOBQ_BUILD_FUZZ=ON -DJOBQ_BUILD_BENCH=OFF -DJOBQ_BUILD_EXAMPLES=OFF -DJOBQ_BUILD_TOOLS=OFF \
    -DJOBQ_WITH_SQLITE=ON -DJOBQ_WITH_POSTGRES=ON -DJOBQ_WITH_REDIS=ON -DJOBQ_WITH_HTTP=OFF >/dev/null
  cmake --build "$dir" -j "$JOBS" --target jobq_fuzz
  mkdir -p "$dir/artifacts"
  for t in "$dir"/tests/fuzz/fuzz_*; do
    [ -x "$t" ] && [[ "$t" != *fuzz_replay_* ]] || continue
    local name="${t##*/fuzz_}" work
    work="$(mktemp -d)"
    echo "== [fuzz] $name: ${FUZZ_SECONDS:-30} s"
    if ! "$t" -max_total_time="${FUZZ_SECONDS:-30}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$dir/artifacts/$name-" "$work" "$ROOT/tests/fuzz/corpus/$name" \
      $( [ -d "$ROOT/tests/fuzz/regressions/$name" ] && echo "$ROOT/tests/fuzz/regressions/$name" ) \
      >"$dir/$name.log" 2>&1; then
      tail -n 60 "$dir/$name.log" >&2
      echo "fuzz target $name failed: the input is in $dir/artifacts" >&2
      exit 1
    fi
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$dir/$name.log" || true
    rm -rf "$work"
  done
}

jobq_install_packages "${PACKAGES[@]}"
jobq_start_servers
for c in "${CONFIGS[@]}"; do
  if [ "$c" = fuzz ]; then run_fuzz; else run_config "$c"; fi
done

#!/usr/bin/env bash
# Builds and runs examples/quickstart.cpp on the embedded default backend (SQLite, no server).
# Installs the few Debian packages it needs when run as root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES=(build-essential cmake ninja-build nlohmann-json3-dev libhowardhinnant-date-dev tzdata libsqlite3-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
BUILD="$ROOT/build/quickstart"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DJOBQ_BUILD_TESTS=OFF \
  -DJOBQ_BUILD_BENCH=OFF -DJOBQ_BUILD_TOOLS=OFF -DJOBQ_WITH_HTTP=OFF -DJOBQ_WITH_SQLITE=ON -DJOBQ_WITH_POSTGRES=OFF -DJOBQ_WITH_REDIS=OFF >/dev/null
cmake --build "$BUILD" --target quickstart >/dev/null
exec "$BUILD/examples/quickstart" "$@"

#!/usr/bin/env bash
# Smoke test of the example service: starts service_worker and service_api on a backend URL,
# registers three users (one with a bouncing address), and checks through the admin CLI that
# every job ends where it should: emails completed (the bounce dead), CRM syncs completed after
# retries. Then stops both processes with SIGTERM and expects clean exits.
# Usage: service_smoke.sh BIN_DIR CLI URL     (URL "env:NAME": the URL in that variable)
set -euo pipefail
BIN="$1" CLI="$2" URL="$3"
if [ "${URL#env:}" != "$URL" ]; then
  var="${URL#env:}"
  URL="${!var:-}"
  [ -n "$URL" ] || { echo "FAIL: $var is not set: run the tests through scripts/test.sh, which starts the server" >&2; exit 1; }
fi
TMP="$(mktemp -d)"
cleanup() {
  [ -n "${API:-}" ] && kill "$API" 2>/dev/null || true
  [ -n "${WRK:-}" ] && kill "$WRK" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
case "$URL" in sqlite://) URL="sqlite://$TMP/jobs.db" ;; esac

"$BIN/service_worker" --url "$URL" --metrics-port 0 --concurrency 4 >"$TMP/worker.log" 2>&1 & WRK=$!
"$BIN/service_api" --url "$URL" --port 0 >"$TMP/api.log" 2>&1 & API=$!
PORT=""
for _ in $(seq 1 100); do
  PORT="$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$TMP/api.log")"
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "FAIL: api did not start"; cat "$TMP/api.log"; exit 1; }

IDS=()
for who in ada grace bounce; do
  reply="$(curl -sS -X POST "http://127.0.0.1:$PORT/register" -d "{\"email\":\"$who-$RANDOM@example.com\",\"name\":\"$who\"}")"
  echo "register $who: $reply"
  IDS+=("$(echo "$reply" | sed -n 's/.*"jobs":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/p')")
done
code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/register" -d 'not json')"
[ "$code" = 400 ] || { echo "FAIL: bad request answered $code"; exit 1; }

state() { "$CLI" --url "$URL" --json show "$1" | sed -n 's/^  "state": "\(.*\)",$/\1/p'; }
expect() {  # expect JOB STATE: waits up to 60 s
  for _ in $(seq 1 600); do
    [ "$(state "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  echo "FAIL: job $1 is $(state "$1"), expected $2"; "$CLI" --url "$URL" show "$1"; cat "$TMP/worker.log"; exit 1
}
read -r e1 c1 <<<"${IDS[0]}"; read -r e2 c2 <<<"${IDS[1]}"; read -r e3 c3 <<<"${IDS[2]}"
expect "$e1" completed; expect "$e2" completed; expect "$e3" dead
expect "$c1" completed; expect "$c2" completed; expect "$c3" completed
"$CLI" --url "$URL" --json show "$c1" | grep -q '"attempts": 3' || { echo "FAIL: crm sync should take 3 attempts"; exit 1; }

kill -TERM "$API" "$WRK"
wait "$WRK"; wrk_rc=$?
wait "$API" || true
API="" WRK=""
[ "$wrk_rc" = 0 ] || { echo "FAIL: worker exited $wrk_rc"; cat "$TMP/worker.log"; exit 1; }
grep -q "stopped;" "$TMP/worker.log" || { echo "FAIL: worker did not stop gracefully"; cat "$TMP/worker.log"; exit 1; }
echo "service smoke test passed on ${URL%%:*}"

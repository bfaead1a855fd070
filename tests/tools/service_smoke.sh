#!/usr/bin/env bash
# Smoke test of the example service on one backend URL (SQLite or PostgreSQL). Starts
# service_worker and service_api and checks, through HTTP and the admin CLI (--json):
#  - POST /register answers 202, the worker process runs both jobs of every user (emails
#    completed, the bouncing address dead, CRM syncs completed after retries), and the user row
#    is in the database (GET /users/<id> from a freshly started API process);
#  - a duplicate email answers 409 and enqueues nothing (job totals unchanged);
#  - atomicity: an API whose CRM job the backend refuses (SERVICE_API_TEST_REFUSE_CRM_JOB=1)
#    answers 500 and leaves neither the user row nor the welcome job (same email registers
#    afterwards; totals unchanged);
#  - bad requests answer 400; SIGTERM stops both processes cleanly.
#  - a bad option (--metrics-port abc, --port abc, --concurrency 0) exits 2 with a message
#    naming the option, and starts nothing.
# Usage: service_smoke.sh BIN_DIR CLI URL     (URL "env:NAME": the URL in that variable;
#                                              "sqlite://": a fresh file in a temp dir)
set -euo pipefail
BIN="$1" CLI="$2" URL="$3"
if [ "${URL#env:}" != "$URL" ]; then
  var="${URL#env:}"
  URL="${!var:-}"
  [ -n "$URL" ] || { echo "FAIL: $var is not set: run the tests through scripts/test.sh, which starts the server" >&2; exit 1; }
fi
TMP="$(mktemp -d)"
API="" API2="" WRK=""
cleanup() {
  for p in $API $API2 $WRK; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
case "$URL" in sqlite://) URL="sqlite://$TMP/jobs.db" ;; esac
RUN="$(date +%s%N)-$$"  # unique emails: a PostgreSQL test server keeps users between runs

fail() { echo "FAIL: $*"; for f in "$TMP"/*.log; do echo "--- $f"; cat "$f"; done; exit 1; }

start_api() {  # start_api LOG [ENV=VALUE...]: starts service_api, sets $! and PORT
  local log="$1"; shift
  env "$@" "$BIN/service_api" --url "$URL" --port 0 >"$TMP/$log" 2>&1 &
  local pid=$!
  PORT=""
  for _ in $(seq 1 100); do
    PORT="$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$TMP/$log")"
    [ -n "$PORT" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$PORT" ] || fail "api ($log) did not start"
  STARTED=$pid
}

post() {  # post PORT BODY: prints "HTTP_CODE BODY"
  local code
  code="$(curl -sS -o "$TMP/reply" -w '%{http_code}' -X POST "http://127.0.0.1:$1/register" -d "$2")"
  echo "$code $(cat "$TMP/reply")"
}
get() { curl -sS "http://127.0.0.1:$1$2"; }

total_jobs() {  # every job of the emails and crm queues, in any state
  "$CLI" --url "$URL" --json queues -q emails -q crm |
    awk -F': ' '/"(queued|active|completed|dead|cancelled)"/ { gsub(/,/, "", $2); n += $2 } END { print n + 0 }'
}

bad_option() {  # bad_option PROGRAM OPTION VALUE: exit 2 and a message naming OPTION
  local rc=0
  "$BIN/$1" --url "$URL" "$2" "$3" >"$TMP/bad-option.out" 2>&1 </dev/null || rc=$?
  [ "$rc" = 2 ] || fail "$1 $2 $3: exit code $rc, not 2: $(cat "$TMP/bad-option.out")"
  grep -q -- "$2" "$TMP/bad-option.out" || fail "$1 $2 $3: no message naming $2: $(cat "$TMP/bad-option.out")"
}
bad_option service_worker --metrics-port abc
bad_option service_worker --concurrency 0
bad_option service_api --port abc

"$BIN/service_worker" --url "$URL" --metrics-port 0 --concurrency 4 >"$TMP/worker.log" 2>&1 & WRK=$!
start_api api.log; API=$STARTED; A=$PORT

# Register three users; each answer carries the user id and the two job ids.
declare -A USER EMAIL_JOB CRM_JOB ADDR
for who in ada grace bounce; do
  ADDR[$who]="$who-$RUN@example.com"
  reply="$(post "$A" "{\"email\":\"${ADDR[$who]}\",\"name\":\"$who\"}")"
  echo "register $who: $reply"
  [ "${reply%% *}" = 202 ] || fail "register $who answered $reply"
  USER[$who]="$(echo "$reply" | sed -n 's/.*"user_id":\([0-9]*\).*/\1/p')"
  read -r EMAIL_JOB[$who] CRM_JOB[$who] <<<"$(echo "$reply" | sed -n 's/.*"jobs":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/p')"
  [ -n "${USER[$who]}" ] && [ -n "${CRM_JOB[$who]}" ] || fail "register $who: no user id or job ids in $reply"
done

# A duplicate email: 409, and not one job more.
before="$(total_jobs)"
reply="$(post "$A" "{\"email\":\"${ADDR[ada]}\",\"name\":\"Ada again\"}")"
echo "duplicate: $reply"
[ "${reply%% *}" = 409 ] || fail "duplicate email answered $reply, expected 409"
[ "$(total_jobs)" = "$before" ] || fail "duplicate email changed the job total from $before to $(total_jobs)"

# Atomicity: the backend refuses the CRM job after the user row and the welcome job were
# written in the same transaction; the rollback must leave neither.
start_api api-fault.log SERVICE_API_TEST_REFUSE_CRM_JOB=1; API2=$STARTED
atomic="atomic-$RUN@example.com"
reply="$(post "$PORT" "{\"email\":\"$atomic\",\"name\":\"Atomic\"}")"
echo "refused job: $reply"
[ "${reply%% *}" = 500 ] || fail "a refused job answered $reply, expected 500"
[ "$(total_jobs)" = "$before" ] || fail "the rolled-back registration left jobs: total $before -> $(total_jobs)"
reply="$(post "$A" "{\"email\":\"$atomic\",\"name\":\"Atomic\"}")"  # the user row must not exist
[ "${reply%% *}" = 202 ] || fail "registering $atomic after the rollback answered $reply (user row left behind?)"
[ "$(total_jobs)" = "$((before + 2))" ] || fail "expected $((before + 2)) jobs, found $(total_jobs)"

# Bad requests.
for body in 'not json' '{"email":"x@example.com"}' '{"email":"nobody","name":"N"}' '[]'; do
  reply="$(post "$A" "$body")"
  [ "${reply%% *}" = 400 ] || fail "bad request $body answered $reply"
done
echo "bad request: $reply"

# The worker process runs every job to its end.
state() { "$CLI" --url "$URL" --json show "$1" | sed -n 's/^  "state": "\(.*\)",$/\1/p'; }
expect() {  # expect JOB STATE: waits up to 60 s
  for _ in $(seq 1 600); do
    [ "$(state "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  "$CLI" --url "$URL" show "$1" || true
  fail "job $1 is $(state "$1"), expected $2"
}
expect "${EMAIL_JOB[ada]}" completed; expect "${EMAIL_JOB[grace]}" completed; expect "${EMAIL_JOB[bounce]}" dead
for who in ada grace bounce; do expect "${CRM_JOB[$who]}" completed; done
"$CLI" --url "$URL" --json show "${CRM_JOB[ada]}" | grep -q '"attempts": 3' || fail "crm sync should take 3 attempts"
grep -q "welcome email sent to ${ADDR[ada]}" "$TMP/worker.log" || fail "the worker did not send ada's email"
grep -q "user ${USER[ada]} synced to the CRM" "$TMP/worker.log" || fail "the worker did not sync ada"

# The user row is in the database: a new API process (no state of its own) finds it.
kill -TERM "$API" "$API2"; wait "$API" "$API2" || true; API="" API2=""
start_api api-restarted.log; API=$STARTED
user="$(get "$PORT" "/users/${USER[ada]}")"
echo "user: $user"
echo "$user" | grep -q "\"email\":\"${ADDR[ada]}\"" || fail "GET /users/${USER[ada]} did not return ada: $user"
echo "$user" | grep -q "\"jobs\":\[{\"id\":${EMAIL_JOB[ada]},\"state\":\"completed\"},{\"id\":${CRM_JOB[ada]},\"state\":\"completed\"}\]" ||
  fail "GET /users/${USER[ada]} does not list its two completed jobs: $user"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/users/999999999")" = 404 ] || fail "unknown user not 404"

kill -TERM "$API" "$WRK"
wrk_rc=0; wait "$WRK" || wrk_rc=$?
wait "$API" || true
API="" WRK=""
[ "$wrk_rc" = 0 ] || fail "worker exited $wrk_rc"
grep -q "stopped;" "$TMP/worker.log" || fail "worker did not stop gracefully"
echo "service smoke test passed on ${URL%%:*}"

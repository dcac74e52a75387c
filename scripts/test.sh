#!/usr/bin/env bash
# README's second command: install what the tests need, start PostgreSQL and MariaDB if they
# are down, and run the suite three times: on SQLite, PostgreSQL and MariaDB. Arguments go to
# every pytest run, e.g. `bash scripts/test.sh tests/api -x`. Exits non-zero if any pass fails.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
. "$REPO/scripts/venv.sh"

set -e
ensure_venv test
if ! command -v qemu-img >/dev/null 2>&1; then
  echo "installing qemu-utils (qemu-img)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null
fi
set +e

db_up() {
  case "$1" in
    postgresql) pg_isready -q -h 127.0.0.1 >/dev/null 2>&1 ;;
    mysql) mysqladmin -h127.0.0.1 -uroot status >/dev/null 2>&1 ;;
  esac
}

# Start a database server unless it already answers; wait up to 30 s for it.
start_db() {
  db_up "$1" && return 0
  echo "starting $1" >&2
  case "$1" in
    postgresql)
      [ -d /etc/postgresql ] || { echo "PostgreSQL is not installed" >&2; return 1; }
      as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start ;;
    mysql)
      [ -x /usr/sbin/mariadbd ] || { echo "MariaDB is not installed" >&2; return 1; }
      as_root install -d -o mysql -g mysql /run/mysqld
      as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd ;;
  esac
  for _ in $(seq 60); do
    db_up "$1" && return 0
    sleep 0.5
  done
  echo "$1 did not answer within 30 s" >&2
  return 1
}

# How many tests pytest's closing line ($closing) reports for one outcome.
count() { grep -oE "[0-9]+ $1" <<<"$closing" | grep -oE '[0-9]+' || echo 0; }

logdir="$(mktemp -d)"
trap 'rm -rf "$logdir"' EXIT
total_passed=0
total_failed=0
summary=()
status=0

# One pass: pytest on one database, its output in $logdir/<db>.log, its exit code in <db>.rc.
run_pass() {
  local db="$1"
  shift
  SECSTOR_TEST_DB="$db" "$VENV/bin/python" -m pytest -p no:cacheprovider -q "$@" >"$logdir/$db.log" 2>&1
  echo $? >"$logdir/$db.rc"
}

databases=()
for db in sqlite postgresql mysql; do
  if [ "$db" != sqlite ] && ! start_db "$db"; then
    summary+=("$db: FAILED, the database server is not running")
    status=1
    continue
  fi
  databases+=("$db")
done

# The three passes run at the same time by default: most of a pass is spent waiting on jobs,
# servers and databases, not on the CPU, so together they take little longer than the longest
# one. SECSTOR_TEST_SERIAL=1 runs them one after another (output streamed as it comes).
pids=()
for db in "${databases[@]}"; do
  if [ "${SECSTOR_TEST_SERIAL:-0}" = 1 ]; then
    echo "=== pytest on $db" >&2
    run_pass "$db" "$@" &
    tail --pid=$! -n +1 -f "$logdir/$db.log" 2>/dev/null
    wait
  else
    echo "=== pytest on $db started" >&2
    run_pass "$db" "$@" &
    pids+=($!)
  fi
done
[ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"

for db in "${databases[@]}"; do
  if [ "${SECSTOR_TEST_SERIAL:-0}" != 1 ]; then
    echo "=== pytest on $db" >&2
    cat "$logdir/$db.log"
  fi
  rc="$(cat "$logdir/$db.rc" 2>/dev/null || echo 1)"
  # pytest's closing line, e.g. "3 failed, 120 passed, 4 deselected in 61.20s".
  closing="$(sed 's/\x1b\[[0-9;]*m//g' "$logdir/$db.log" | grep -E ' in [0-9.]+s' | tail -n 1)"
  passed=$(count passed)
  failed=$(( $(count failed) + $(count 'errors?') ))
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  case "$rc" in
    0) summary+=("$db: ok, $passed passed") ;;
    5) summary+=("$db: FAILED, no tests ran (tests marked nodb run only in the sqlite pass)"); status=1 ;;
    *) summary+=("$db: FAILED (pytest exit $rc), $passed passed, $failed failed"); status=1 ;;
  esac
done

echo
for line in "${summary[@]}"; do echo "$line"; done
echo "passed: $total_passed passed, $total_failed failed"
exit "$status"

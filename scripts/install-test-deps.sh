#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, when it is missing:
# - restic: the interoperability tests read backplan's repositories with the real restic;
# - strace: a test observes that repository folders are synced after a backup;
# - groff: the manual pages `backplan man` writes are rendered, warnings are failures;
# - PostgreSQL (server and client tools): the postgres tests run against a real server. A
#   cluster is started (created first if there is none) and a superuser `backplan_test` with
#   a password is made; the tests find it through target/test-postgres/ (url, password).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v restic >/dev/null || need+=(restic)
command -v strace >/dev/null || need+=(strace)
command -v groff >/dev/null || need+=(groff-base)  # the man page test renders the pages
command -v setpriv >/dev/null || need+=(util-linux)
command -v sqlite3 >/dev/null || need+=(sqlite3)  # the SQLite tests drive other processes with the shell
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v pg_restore >/dev/null || need+=(postgresql-client)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}"
fi

# Observability (issue 11): `promtool` (Debian's `prometheus` package) checks a real scrape of
# the metrics, the alert rules in monitoring/ and their unit tests; headless `chromium` loads
# the status page. Without recommends: 1 min 22 s of `apt-get install` on a Debian 12
# container after `apt-get update` (37 packages, most of them for chromium).
observability=()
command -v promtool >/dev/null || observability+=(prometheus)
command -v chromium >/dev/null || observability+=(chromium)
if [ ${#observability[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${observability[@]}"
fi

# A running cluster: the newest installed version's `main`, created when missing.
ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main"' | grep -q .; then
  $sudo pg_createcluster "$ver" main
fi
if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  $sudo pg_ctlcluster "$ver" main start
fi
port=$(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" {print $3}')

# The tests' role: a superuser with a password, reached over TCP on 127.0.0.1 (Debian's
# pg_hba.conf asks for a password there).
password=backplan-test-password
if [ "$(id -u)" -eq 0 ]; then as_postgres="runuser -u postgres --"; else as_postgres="sudo -u postgres"; fi
$as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 -v pw="$password" <<'SQL'
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'backplan_test') AS missing \gset
\if :missing
CREATE ROLE backplan_test LOGIN SUPERUSER;
\endif
ALTER ROLE backplan_test PASSWORD :'pw';
SQL
mkdir -p target/test-postgres
umask 077
printf '%s\n' "$password" > target/test-postgres/password
printf 'postgres://backplan_test@127.0.0.1:%s/\n' "$port" > target/test-postgres/url

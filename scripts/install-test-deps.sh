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

# --- Storage emulators (issue 10): Azurite (Azure Blob, from npm) and moto in server mode (S3,
# from PyPI), installed under target/test-emulators/ and started on loopback when not running.
# The tests find them through target/test-emulators/{azurite,s3}/endpoint; each test makes its
# own container or bucket. Azurite keeps its blobs under target/test-emulators/azurite/data;
# moto keeps its buckets in memory.
emu=target/test-emulators
mkdir -p "$emu/azurite" "$emu/s3"
need_emu=()
command -v curl >/dev/null || need_emu+=(curl)
command -v npm >/dev/null || need_emu+=(nodejs npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_emu+=(python3-venv)
if [ ${#need_emu[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need_emu[@]}"
fi
[ -x "$emu/node/node_modules/.bin/azurite-blob" ] \
  || npm install --silent --no-audit --no-fund --prefix "$emu/node" azurite@3
[ -x "$emu/venv/bin/moto_server" ] || {
  python3 -m venv "$emu/venv"
  "$emu/venv/bin/pip" install -q 'moto[server]'
}
# Starts `$2...` in the background unless the endpoint in `$1/endpoint` answers; waits for it.
start_emulator() {
  local dir=$1 port=$2 url=$3; shift 3
  if [ -f "$dir/endpoint" ] && curl -s -o /dev/null "$(cat "$dir/endpoint")"; then return; fi
  [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
  setsid "$@" >"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  # Up to 2 minutes: a first start on a cold, busy machine (node loading Azurite's modules
  # from a cold disk cache) has been seen to take over 20 s.
  for _ in $(seq 600); do
    curl -s -o /dev/null "$url" && { echo "$url" >"$dir/endpoint"; return; }
    sleep 0.2
  done
  echo "the emulator in $dir did not start within 2 minutes; see $dir/log" >&2
  exit 1
}
azurite_port=${BACKPLAN_TEST_AZURITE_PORT:-10400}
s3_port=${BACKPLAN_TEST_S3_PORT:-10401}
start_emulator "$emu/azurite" "$azurite_port" "http://127.0.0.1:$azurite_port/devstoreaccount1" \
  "$emu/node/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$azurite_port" \
  --location "$emu/azurite/data" --skipApiVersionCheck --loose
start_emulator "$emu/s3" "$s3_port" "http://127.0.0.1:$s3_port" \
  "$emu/venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port"

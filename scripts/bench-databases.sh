#!/usr/bin/env bash
# Database instances benchmark (issue 9): backplan against pg_dump/pg_restore and sqlite3 .backup,
# on the same machine, in the same run.
#
#   scripts/install-test-deps.sh                 # the PostgreSQL superuser backplan_test
#   cargo build --locked                         # or --release; BACKPLAN=path overrides
#   bash scripts/bench-databases.sh [WORKDIR]    # default /tmp/backplan-db-bench
#
# Needs: a running PostgreSQL reachable as BENCH_PG_URL (default: target/test-postgres/url, a
# superuser URL ending in "/") with its password in BENCH_PG_PASSWORD_FILE (default
# target/test-postgres/password); pgbench, pg_dump, pg_restore, psql, sqlite3, GNU time.
# About 6 GiB free in WORKDIR. Every run starts anew (the days change the data): the PostgreSQL
# database `benchpg` (BENCH_PG_DB overrides the name, e.g. when two runs share a server; pgbench
# scale BENCH_PG_SCALE, default 70: ~1 GiB) and the SQLite database
# (~1 GiB of random rows) are made again, untimed, then the repository, dumps and sandboxes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/tmp/backplan-db-bench}
BP=${BACKPLAN:-$ROOT/target/debug/backplan}
PGURL=${BENCH_PG_URL:-$(cat "$ROOT/target/test-postgres/url")}
PGPWFILE=${BENCH_PG_PASSWORD_FILE:-$ROOT/target/test-postgres/password}
SCALE=${BENCH_PG_SCALE:-70}
DB=${BENCH_PG_DB:-benchpg}
SBX=${DB}_sandbox
[[ $PGURL == */ ]] || PGURL="$PGURL/"
export PGPASSWORD
PGPASSWORD=$(cat "$PGPWFILE")
PGHOST=$(sed -E 's#^postgres(ql)?://([^@/]*@)?([^:/]*).*#\3#' <<<"$PGURL")
PGPORT=$(sed -E 's#^postgres(ql)?://([^@/]*@)?[^:/]*:?([0-9]*)/.*#\3#' <<<"$PGURL")
PGUSER=$(sed -E 's#^postgres(ql)?://([^:@/]*).*@.*#\2#' <<<"$PGURL")
export PGHOST PGUSER PGPORT=${PGPORT:-5432}

mkdir -p "$W"
RES=$W/results.tsv
: >"$RES"
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
sql() { psql -X -q -v ON_ERROR_STOP=1 -At -d "$1" -c "$2"; }
size() { du -sb "$1" | cut -f1; }

# timed NAME CMD...: one line "NAME <tab> wall <tab> user+sys <tab> peak KiB" in results.tsv.
timed() {
  local name=$1
  shift
  log "timing $name"
  /usr/bin/time -o "$W/time.$name" -f '%e s wall, %U+%S s CPU, %M KiB peak' "$@" >"$W/out.$name" 2>&1 ||
    { cat "$W/out.$name" >&2; log "FAILED: $name"; exit 1; }
  printf '%s\t%s\n' "$name" "$(tail -1 "$W/time.$name")" | tee -a "$RES" >&2
}
note() { printf '%s\t%s\n' "$1" "$2" | tee -a "$RES" >&2; }

# ---------------------------------------------------------------- data (made anew, untimed)
log "pgbench -i -s $SCALE $DB"
sql postgres "drop database if exists $DB with (force)"
sql postgres "create database $DB"
pgbench -q -i -s "$SCALE" "$DB" >&2
SQ=$W/data/app.db
mkdir -p "$W/data"
rm -f "$SQ"*
if true; then
  log "generating $SQ (~1 GiB)"
  sqlite3 "$SQ.tmp" <<'SQL'
PRAGMA journal_mode = WAL;
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, body TEXT NOT NULL, payload BLOB NOT NULL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 775000)
INSERT INTO items SELECT i, 'item-' || i, hex(randomblob(200)), randomblob(600) FROM n;
CREATE INDEX items_name ON items (name);
PRAGMA wal_checkpoint(TRUNCATE);
SQL
  mv "$SQ.tmp" "$SQ"
fi
note pg_size "$(sql "$DB" "select pg_size_pretty(pg_database_size('$DB'))") ($(sql "$DB" "select pg_database_size('$DB')") bytes)"
note sqlite_size "$(size "$SQ") bytes"

# ---------------------------------------------------------------- fresh state for this run
rm -rf "$W/state" "$W/dumps" "$W/data/app-sandbox.db"*
sql postgres "drop database if exists $SBX with (force)"
sql postgres "drop database if exists ${DB}_pgrestore with (force)"
mkdir -p "$W/dumps"
CFG=$W/backplan.toml
cat >"$CFG" <<TOML
[daemon]
state_dir = "state"

[schedule]
daily_at = "02:00"
timezone = "UTC"
retention = "30d"
keep_last_good = 1

[instances.pg]
type = "production"
version = "1.0"
source = { kind = "postgres", url = "${PGURL}${DB}", password_file = "$PGPWFILE" }

[instances.pg-sandbox]
type = "sandbox"
version = "1.0"
source = { kind = "postgres", url = "${PGURL}${SBX}", password_file = "$PGPWFILE" }

[instances.sq]
type = "production"
version = "1.0"
source = { kind = "sqlite", path = "data/app.db" }

[instances.sq-sandbox]
type = "sandbox"
version = "1.0"
source = { kind = "sqlite", path = "data/app-sandbox.db" }
TOML
apply() { "$BP" apply -c "$CFG" --auto-approve; }
backup() { printf '\n[instances.%s.backups.%s]\nlabel = "%s"\n' "$1" "$2" "$2" >>"$CFG"; }
restore() { printf '\n[restores.%s]\nfrom = "%s"\nto = "%s"\n' "$1" "$2" "$3" >>"$CFG"; }
REPO=$W/state/repository

log "apply: adopt the production databases, create the sandboxes (untimed)"
apply >"$W/out.setup" 2>&1 || { cat "$W/out.setup" >&2; exit 1; }

# ---------------------------------------------------------------- PostgreSQL backup
timed pg_dump_fc_1 pg_dump -Fc -d "$DB" -f "$W/dumps/day1.dump"
backup pg day1
timed backplan_pg_backup_day1 "$BP" apply -c "$CFG" --auto-approve
timed pg_dump_fc_2 pg_dump -Fc -d "$DB" -f "$W/dumps/day1b.dump"
note pg_dump_fc_file "$(size "$W/dumps/day1.dump") bytes"
REPO1=$(size "$REPO")
note repo_after_pg_day1 "$REPO1 bytes"

# ---------------------------------------------------------------- PostgreSQL restore
sql postgres "create database ${DB}_pgrestore"
timed pg_restore_fresh pg_restore -d "${DB}_pgrestore" "$W/dumps/day1.dump"
restore r1 pg/day1 pg-sandbox
timed backplan_pg_restore_sandbox "$BP" apply -c "$CFG" --auto-approve
note pg_restore_rows "$(sql "${DB}_pgrestore" "select count(*) from pgbench_accounts")"
note backplan_restore_rows "$(sql "$SBX" "select count(*) from pgbench_accounts")"
sql postgres "drop database ${DB}_pgrestore"
REPO1R=$(size "$REPO")
note repo_after_pg_restore "$REPO1R bytes (includes the pre-restore backup of the sandbox)"

# ---------------------------------------------------------------- PostgreSQL second day
N=$(sql "$DB" "select count(*) from pgbench_accounts")
H=$((N / 50))   # 2% of the accounts as new history rows
U=$((N / 100))  # 1% of the accounts
log "day 2: $H history rows appended, the $U most recent accounts updated"
sql "$DB" "insert into pgbench_history (tid, bid, aid, delta, mtime)
  select 1 + (random() * ($SCALE * 10 - 1))::int, 1 + (random() * ($SCALE - 1))::int,
         1 + (random() * ($N - 1))::int, (random() * 10000)::int - 5000, now()
  from generate_series(1, $H)"
sql "$DB" "update pgbench_accounts set abalance = abalance + 1 where aid > $N - $U"
sql "$DB" "vacuum analyze"
backup pg day2
timed backplan_pg_backup_day2 "$BP" apply -c "$CFG" --auto-approve
REPO2=$(size "$REPO")
note repo_growth_day2_realistic "$((REPO2 - REPO1R)) bytes"

log "day 3: $U accounts updated uniformly at random"
sql "$DB" "update pgbench_accounts set abalance = abalance + 1
  where aid in (select 1 + (random() * ($N - 1))::int from generate_series(1, $U))"
sql "$DB" "vacuum analyze"
backup pg day3
timed backplan_pg_backup_day3 "$BP" apply -c "$CFG" --auto-approve
REPO3=$(size "$REPO")
note repo_growth_day3_random "$((REPO3 - REPO2)) bytes"

# ---------------------------------------------------------------- SQLite
timed sqlite3_backup_1 sqlite3 "$SQ" ".backup '$W/dumps/app.backup'"
backup sq day1
REPO_BEFORE_SQ=$(size "$REPO")
timed backplan_sqlite_backup "$BP" apply -c "$CFG" --auto-approve
note repo_growth_sqlite_backup "$(($(size "$REPO") - REPO_BEFORE_SQ)) bytes"
timed sqlite3_backup_2 sqlite3 "$SQ" ".backup '$W/dumps/app2.backup'"
timed sqlite_copy_back sh -c "cp '$W/dumps/app.backup' '$W/data/app-copy.db' && sync '$W/data/app-copy.db'"
restore r2 sq/day1 sq-sandbox
timed backplan_sqlite_restore_sandbox "$BP" apply -c "$CFG" --auto-approve
note sqlite_restored_integrity "$(sqlite3 "$W/data/app-sandbox.db" 'pragma integrity_check; select count(*) from items' | tr '\n' ' ')"
rm -f "$W/data/app-copy.db"

SN=$(sqlite3 "$SQ" 'select count(*) from items')
log "SQLite day 2: $((SN / 50)) rows appended, the $((SN / 100)) most recent rows updated"
sqlite3 "$SQ" "insert into items select $SN + i, 'item-' || ($SN + i), hex(randomblob(200)), randomblob(600)
  from (with recursive n(i) as (select 1 union all select i + 1 from n where i < $SN / 50) select i from n);
  update items set body = hex(randomblob(200)) where id > $SN - $SN / 100; pragma wal_checkpoint(truncate);" >/dev/null
REPO_SQ1=$(size "$REPO")
backup sq day2
timed backplan_sqlite_backup_day2 "$BP" apply -c "$CFG" --auto-approve
REPO_SQ2=$(size "$REPO")
note repo_growth_sqlite_day2_realistic "$((REPO_SQ2 - REPO_SQ1)) bytes"
log "SQLite day 3: $((SN / 100)) rows updated uniformly at random"
sqlite3 "$SQ" "update items set body = hex(randomblob(200))
  where id in (select abs(random()) % $SN + 1 from (with recursive n(i) as (select 1 union all select i + 1 from n where i < $SN / 100) select i from n));
  pragma wal_checkpoint(truncate);" >/dev/null
backup sq day3
timed backplan_sqlite_backup_day3 "$BP" apply -c "$CFG" --auto-approve
note repo_growth_sqlite_day3_random "$(($(size "$REPO") - REPO_SQ2)) bytes"

log "done: $RES"
cat "$RES"

#!/usr/bin/env bash
# Database instances benchmark (issue 9): backplan against pg_dump/pg_restore and sqlite3 .backup,
# on the same machine, in the same run, each pair alternated three times.
#
#   scripts/install-test-deps.sh                 # the PostgreSQL superuser backplan_test
#   cargo build --release --locked               # or a debug build; BACKPLAN=path overrides
#   BACKPLAN=target/release/backplan bash scripts/bench-databases.sh [WORKDIR]
#                                                # default WORKDIR /tmp/backplan-db-bench
#   BACKPLAN_BEFORE=path                         # optional: another build (an earlier commit)
#                                                # also backs up (into its own fresh repository,
#                                                # folder bN: PostgreSQL and SQLite) and restores
#                                                # into the full sandbox, alternated
#   BENCH_PARTS=pg,app,sqlite                    # the default: every part; pg = backup + restore
#
# Needs: a running PostgreSQL reachable as BENCH_PG_URL (default: target/test-postgres/url, a
# superuser URL ending in "/") with its password in BENCH_PG_PASSWORD_FILE (default
# target/test-postgres/password); pgbench, pg_dump, pg_restore, psql, sqlite3, GNU time.
# About 8 GiB free in WORKDIR and 4.5 GiB on the server (up to four databases of ~1.1 GB; the
# two below and the sandbox are left in place at the end). Every run starts anew, untimed:
#
# - `$DB` (BENCH_PG_DB, default benchpg): `pgbench -i -s $BENCH_PG_SCALE` (default 70, ~1 GiB),
#   pgbench's own data, whose rows are mostly blank padding. Backup and restore speed.
# - `${DB}_app`: the same tables and row count, but each account's `filler` holds varied text
#   (an md5 hex string, a status word, a date), so that it compresses like application data
#   rather than like blanks. Stored growth: a realistic second day (rows appended to
#   pgbench_history, the most recent 1% of accounts updated) and a uniformly random one
#   (pgbench's built-in TPC-B-like script, which updates accounts chosen uniformly at random).
# - a SQLite database of ~1 GiB of random rows (BENCH_SQLITE_ROWS, default 775000).
#
# Each timed line in results.tsv: name, wall s, user s, sys s, peak KiB, 1-minute load average
# before the step. Backups are timed into a fresh repository each round (a second backup of the
# same data into the same repository stores nothing and would measure deduplication only).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/tmp/backplan-db-bench}
BP=${BACKPLAN:-$ROOT/target/debug/backplan}
PGURL=${BENCH_PG_URL:-$(cat "$ROOT/target/test-postgres/url")}
PGPWFILE=${BENCH_PG_PASSWORD_FILE:-$ROOT/target/test-postgres/password}
SCALE=${BENCH_PG_SCALE:-70}
DB=${BENCH_PG_DB:-benchpg}
ADB=${DB}_app
SBX=${DB}_sandbox
ROUNDS=${BENCH_ROUNDS:-3}
SQROWS=${BENCH_SQLITE_ROWS:-775000}
# Which parts run: pg (backup and restore), app (growth on the varied-text database), sqlite.
PARTS=${BENCH_PARTS:-pg,app,sqlite}
has() { [[ ,$PARTS, == *,$1,* ]]; }
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
load1() { cut -d' ' -f1 /proc/loadavg; }

# timed NAME CMD...: one line "NAME wall user sys peak load" (tab-separated) in results.tsv.
timed() {
  local name=$1 load
  shift
  load=$(load1)
  log "timing $name (load $load)"
  /usr/bin/time -o "$W/time.$name" -f '%e	%U	%S	%M' "$@" >"$W/out.$name" 2>&1 ||
    { cat "$W/out.$name" >&2; log "FAILED: $name"; exit 1; }
  printf '%s\t%s\t%s\n' "$name" "$(tail -1 "$W/time.$name")" "$load" | tee -a "$RES" >&2
}
note() { printf '%s\t%s\n' "$1" "$2" | tee -a "$RES" >&2; }
note load_at_start "$(cat /proc/loadavg)"
note commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"

# ---------------------------------------------------------------- data (made anew, untimed)
if has pg; then
log "pgbench -i -s $SCALE $DB"
sql postgres "drop database if exists $DB with (force)"
sql postgres "create database $DB"
pgbench -q -i -s "$SCALE" "$DB" >&2
fi

if has app; then
log "$ADB: pgbench's tables, filler with varied text"
sql postgres "drop database if exists $ADB with (force)"
sql postgres "create database $ADB"
pgbench -q -i -I dt -s "$SCALE" "$ADB" >&2
sql "$ADB" "insert into pgbench_branches (bid, bbalance) select b, 0 from generate_series(1, $SCALE) b;
  insert into pgbench_tellers (tid, bid, tbalance) select t, (t - 1) / 10 + 1, 0 from generate_series(1, $SCALE * 10) t;
  insert into pgbench_accounts (aid, bid, abalance, filler)
    select a, (a - 1) / 100000 + 1, 0,
           md5(a::text) || ' ' || (array['new','paid','shipped','returned','cancelled'])[1 + a % 5]
             || ' ' || (date '2024-01-01' + a / 5000)
    from generate_series(1, $SCALE * 100000) a"
pgbench -q -i -I vp "$ADB" >&2
fi

SQ=$W/data/app.db
mkdir -p "$W/data"
rm -f "$SQ"*
if has sqlite; then
log "generating $SQ (~1 GiB)"
sqlite3 "$SQ.tmp" <<SQL
PRAGMA journal_mode = WAL;
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, body TEXT NOT NULL, payload BLOB NOT NULL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $SQROWS)
INSERT INTO items SELECT i, 'item-' || i, hex(randomblob(200)), randomblob(600) FROM n;
CREATE INDEX items_name ON items (name);
PRAGMA wal_checkpoint(TRUNCATE);
SQL
mv "$SQ.tmp" "$SQ"
note sqlite_size "$(size "$SQ") bytes"
fi
has pg && note pg_size "$(sql "$DB" "select pg_database_size('$DB')") bytes"
has app && note pg_app_size "$(sql "$ADB" "select pg_database_size('$ADB')") bytes"

# ---------------------------------------------------------------- one backplan file per round
rm -rf "$W"/r[0-9]* "$W"/b[0-9]* "$W/dumps" "$W/data/app-sandbox.db"*
sql postgres "drop database if exists $SBX with (force)"
sql postgres "drop database if exists ${DB}_pgrestore with (force)"
mkdir -p "$W/dumps"
# Round 1's file also has the sandboxes and the second database; rounds 2.. only time backups.
for r in $(seq 1 "$ROUNDS"); do
  mkdir -p "$W/r$r"
  cat >"$W/r$r/backplan.toml" <<TOML
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

[instances.sq]
type = "production"
version = "1.0"
source = { kind = "sqlite", path = "$SQ" }

# A tiny database whose first backup creates the repository (untimed): the timed backups
# are then what a daily backup is, without the one-time creation and key generation.
[instances.warm]
type = "production"
version = "1.0"
source = { kind = "sqlite", path = "$W/data/warm.db" }
TOML
done
cat >>"$W/r1/backplan.toml" <<TOML

[instances.pg-sandbox]
type = "sandbox"
version = "1.0"
source = { kind = "postgres", url = "${PGURL}${SBX}", password_file = "$PGPWFILE" }

[instances.app]
type = "production"
version = "1.0"
source = { kind = "postgres", url = "${PGURL}${ADB}", password_file = "$PGPWFILE" }

[instances.sq-sandbox]
type = "sandbox"
version = "1.0"
source = { kind = "sqlite", path = "$W/data/app-sandbox.db" }
TOML
apply() { "$BP" apply -c "$W/r$1/backplan.toml" --auto-approve; }
backup() { printf '\n[instances.%s.backups.%s]\nlabel = "%s"\n' "$2" "$3" "$3" >>"$W/r$1/backplan.toml"; }
restore() { printf '\n[restores.%s]\nfrom = "%s"\nto = "%s"\n' "$2" "$3" "$4" >>"$W/r$1/backplan.toml"; }
repo() { echo "$W/r$1/state/repository"; }

log "apply: adopt the production databases, create the sandboxes and repositories (untimed)"
rm -f "$W/data/warm.db"
sqlite3 "$W/data/warm.db" "create table t (x); insert into t values (1)"
for r in $(seq 1 "$ROUNDS"); do
  if [[ -n ${BACKPLAN_BEFORE:-} ]]; then
    # The other build's own folder and repository per round, for its backups.
    mkdir -p "$W/b$r"
    sed -n '/^\[instances.pg-sandbox\]/q;p' "$W/r$r/backplan.toml" >"$W/b$r/backplan.toml"
    printf '\n[instances.warm.backups.init]\nlabel = "init"\n' >>"$W/b$r/backplan.toml"
    (cd "$W/b$r" && "$BACKPLAN_BEFORE" apply -c backplan.toml --auto-approve) >"$W/out.setupb$r" 2>&1 ||
      { cat "$W/out.setupb$r" >&2; exit 1; }
  fi
  backup "$r" warm init
  (cd "$W/r$r" && apply "$r") >"$W/out.setup$r" 2>&1 || { cat "$W/out.setup$r" >&2; exit 1; }
done

# ---------------------------------------------------------------- PostgreSQL backup, alternated
if has pg; then
for r in $(seq 1 "$ROUNDS"); do
  timed "pg_dump_fc.$r" pg_dump -Fc -d "$DB" -f "$W/dumps/pg$r.dump"
  backup "$r" pg day1
  timed "backplan_pg_backup.$r" sh -c "cd '$W/r$r' && '$BP' apply -c backplan.toml --auto-approve"
  note "repo_after_pg_backup.$r" "$(size "$(repo "$r")") bytes"
  if [[ -n ${BACKPLAN_BEFORE:-} ]]; then
    printf '\n[instances.pg.backups.day1]\nlabel = "day1"\n' >>"$W/b$r/backplan.toml"
    timed "before_pg_backup.$r" sh -c "cd '$W/b$r' && '$BACKPLAN_BEFORE' apply -c backplan.toml --auto-approve"
  fi
done
note pg_dump_fc_file "$(size "$W/dumps/pg1.dump") bytes"

# ---------------------------------------------------------------- PostgreSQL restore, alternated
# Per round: pg_restore of pg1.dump into a new database (the baseline), then backplan's restore
# of round 1's backup into an empty sandbox (dropped and made anew, untimed: its pre-restore
# backup is of an empty database), then into the same sandbox now holding that 1 GiB (its
# pre-restore backup is of the whole database). After each, the pre-restore backup's own time
# (its record: created to completed) is noted beside the restore's.
safety_secs() {
  "$BP" backups -c "$W/r1/backplan.toml" --json | jq -r --arg l "Before restore $1" '
    def t: (sub("\\.[0-9]+"; "") | fromdateiso8601) + ((capture("(?<f>\\.[0-9]+)").f | tonumber) // 0);
    .backups[] | select(.label == $l) | (.completed_at | t) - (.created_at | t) | . * 100 | round / 100'
}
for r in $(seq 1 "$ROUNDS"); do
  sql postgres "drop database if exists ${DB}_pgrestore with (force)"
  timed "pg_restore.$r" sh -c "createdb '${DB}_pgrestore' && pg_restore -d '${DB}_pgrestore' '$W/dumps/pg1.dump'"
  sql postgres "drop database if exists $SBX with (force)"
  sql postgres "create database $SBX"
  restore 1 "e$r" pg/day1 pg-sandbox
  timed "backplan_pg_restore_empty.$r" sh -c "cd '$W/r1' && '$BP' apply -c backplan.toml --auto-approve"
  note "pre_restore_backup_empty.$r" "$(safety_secs "e$r") s"
  restore 1 "f$r" pg/day1 pg-sandbox
  timed "backplan_pg_restore_full.$r" sh -c "cd '$W/r1' && '$BP' apply -c backplan.toml --auto-approve"
  note "pre_restore_backup_full.$r" "$(safety_secs "f$r") s"
  if [[ -n ${BACKPLAN_BEFORE:-} ]]; then
    # Another build (an earlier commit) restoring into the same full sandbox: an A/B in one run.
    restore 1 "g$r" pg/day1 pg-sandbox
    timed "before_pg_restore_full.$r" sh -c "cd '$W/r1' && '$BACKPLAN_BEFORE' apply -c backplan.toml --auto-approve"
    note "before_pre_restore_backup_full.$r" "$(safety_secs "g$r") s"
  fi
done
note pg_restore_rows "$(sql "${DB}_pgrestore" "select count(*) from pgbench_accounts")"
note backplan_restore_rows "$(sql "$SBX" "select count(*) from pgbench_accounts")"
sql postgres "drop database ${DB}_pgrestore"
fi

# ---------------------------------------------------------------- PostgreSQL growth on $ADB
if has app; then
timed pg_dump_fc_app pg_dump -Fc -d "$ADB" -f "$W/dumps/app.dump"
note pg_dump_fc_app_file "$(size "$W/dumps/app.dump") bytes"
pg_dump -Fc --compress=0 -d "$ADB" -f "$W/dumps/app-plain.dump"
note pg_dump_plain_app_file "$(size "$W/dumps/app-plain.dump") bytes"
rm -f "$W/dumps/app-plain.dump"
A0=$(size "$(repo 1)")
backup 1 app day1
timed backplan_app_backup_day1 sh -c "cd '$W/r1' && '$BP' apply -c backplan.toml --auto-approve"
A1=$(size "$(repo 1)")
note app_first_backup_stored "$((A1 - A0)) bytes"

N=$(sql "$ADB" "select count(*) from pgbench_accounts")
H=$((N / 50))   # 2% of the accounts as new history rows
U=$((N / 100))  # 1% of the accounts
log "day 2 (realistic): $H history rows appended, the $U most recent accounts updated"
sql "$ADB" "insert into pgbench_history (tid, bid, aid, delta, mtime)
  select 1 + (random() * ($SCALE * 10 - 1))::int, 1 + (random() * ($SCALE - 1))::int,
         $N - $U + 1 + (random() * ($U - 1))::int, (random() * 10000)::int - 5000, now()
  from generate_series(1, $H)"
sql "$ADB" "update pgbench_accounts set abalance = abalance + (random() * 10000)::int - 5000
  where aid > $N - $U"
sql "$ADB" "vacuum analyze"
backup 1 app day2
timed backplan_app_backup_day2 sh -c "cd '$W/r1' && '$BP' apply -c backplan.toml --auto-approve"
A2=$(size "$(repo 1)")
note app_growth_day2_realistic "$((A2 - A1)) bytes"

log "day 3 (uniformly random): pgbench's built-in tpcb-like script, $U transactions"
PGOPTIONS='-c synchronous_commit=off' pgbench -n -b tpcb-like -c 4 -j 2 -t $((U / 4)) "$ADB" >"$W/out.pgbench" 2>&1 ||
  { cat "$W/out.pgbench" >&2; exit 1; }
note pgbench_day3 "$(grep -E '^(number of transactions actually processed|tps)' "$W/out.pgbench" | tr '\n' ' ')"
sql "$ADB" "vacuum analyze"
backup 1 app day3
timed backplan_app_backup_day3 sh -c "cd '$W/r1' && '$BP' apply -c backplan.toml --auto-approve"
A3=$(size "$(repo 1)")
note app_growth_day3_random "$((A3 - A2)) bytes"
fi

# ---------------------------------------------------------------- SQLite backup, alternated
if has sqlite; then
for r in $(seq 1 "$ROUNDS"); do
  timed "sqlite3_backup.$r" sqlite3 "$SQ" ".backup '$W/dumps/app$r.backup'"
  backup "$r" sq day1
  B0=$(size "$(repo "$r")")
  timed "backplan_sqlite_backup.$r" sh -c "cd '$W/r$r' && '$BP' apply -c backplan.toml --auto-approve"
  note "sqlite_first_backup_stored.$r" "$(($(size "$(repo "$r")") - B0)) bytes"
  if [[ -n ${BACKPLAN_BEFORE:-} ]]; then
    # The other build's backup of the same file into its own repository: an A/B in one run.
    printf '\n[instances.sq.backups.day1]\nlabel = "day1"\n' >>"$W/b$r/backplan.toml"
    B0=$(size "$W/b$r/state/repository")
    timed "before_sqlite_backup.$r" sh -c "cd '$W/b$r' && '$BACKPLAN_BEFORE' apply -c backplan.toml --auto-approve"
    note "before_sqlite_first_backup_stored.$r" "$(($(size "$W/b$r/state/repository") - B0)) bytes"
  fi
  [[ $r == 1 ]] || rm -f "$W/dumps/app$r.backup"
done

# ---------------------------------------------------------------- SQLite restore, alternated
for r in $(seq 1 "$ROUNDS"); do
  timed "sqlite_copy_back.$r" sh -c "cp '$W/dumps/app1.backup' '$W/data/app-copy.db' && sync '$W/data/app-copy.db'"
  rm -f "$W/data/app-copy.db"
  restore 1 "s$r" sq/day1 sq-sandbox
  timed "backplan_sqlite_restore.$r" sh -c "cd '$W/r1' && '$BP' apply -c backplan.toml --auto-approve"
done
note sqlite_restored_integrity "$(sqlite3 "$W/data/app-sandbox.db" 'pragma integrity_check; select count(*) from items' | tr '\n' ' ')"

SN=$(sqlite3 "$SQ" 'select count(*) from items')
log "SQLite day 2: $((SN / 50)) rows appended, the $((SN / 100)) most recent rows updated"
sqlite3 "$SQ" "insert into items select $SN + i, 'item-' || ($SN + i), hex(randomblob(200)), randomblob(600)
  from (with recursive n(i) as (select 1 union all select i + 1 from n where i < $SN / 50) select i from n);
  update items set body = hex(randomblob(200)) where id > $SN - $SN / 100; pragma wal_checkpoint(truncate);" >/dev/null
REPO_SQ1=$(size "$(repo 1)")
backup 1 sq day2
timed backplan_sqlite_backup_day2 sh -c "cd '$W/r1' && '$BP' apply -c backplan.toml --auto-approve"
REPO_SQ2=$(size "$(repo 1)")
note sqlite_growth_day2_realistic "$((REPO_SQ2 - REPO_SQ1)) bytes"
log "SQLite day 3: $((SN / 100)) rows updated uniformly at random"
sqlite3 "$SQ" "update items set body = hex(randomblob(200))
  where id in (select abs(random()) % $SN + 1 from (with recursive n(i) as (select 1 union all select i + 1 from n where i < $SN / 100) select i from n));
  pragma wal_checkpoint(truncate);" >/dev/null
backup 1 sq day3
timed backplan_sqlite_backup_day3 sh -c "cd '$W/r1' && '$BP' apply -c backplan.toml --auto-approve"
note sqlite_growth_day3_random "$(($(size "$(repo 1)") - REPO_SQ2)) bytes"
fi
note load_at_end "$(cat /proc/loadavg)"

# ---------------------------------------------------------------- summary: quietest and spread
log "done: $RES"
awk -F'\t' 'NF == 6 && $1 ~ /\.[0-9]+$/ {
    k = $1; sub(/\.[0-9]+$/, "", k); cpu = $3 + $4
    if (!(k in min) || $2 < min[k]) { min[k] = $2; mincpu[k] = cpu; minload[k] = $6 }
    if (!(k in max) || $2 > max[k]) max[k] = $2
    if (!(k in order)) { order[k] = ++n; keys[n] = k }
  }
  END { printf "\n%-28s %10s %10s %8s %6s\n", "step (quietest of rounds)", "wall s", "CPU s", "spread", "load"
        for (i = 1; i <= n; i++) { k = keys[i]
          printf "%-28s %10.2f %10.2f %7.0f%% %6s\n", k, min[k], mincpu[k], 100 * (max[k] - min[k]) / min[k], minload[k] } }' "$RES"

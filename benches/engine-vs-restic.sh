#!/usr/bin/env bash
# Storage engine benchmark: `backplan apply` against restic on the same dataset, same disk, same run.
#
#   bash benches/engine-vs-restic.sh [WORKDIR]        (default WORKDIR: /tmp/backplan-engine-bench)
#
# Needs: a Rust toolchain, restic (scripts/install-test-deps.sh installs Debian's), python3 and
# GNU time at /usr/bin/time (Debian package `time`; installed when missing and running as root).
# Takes about 8 minutes after the build on a quiet 2-core machine and about 8 GiB in WORKDIR. Everything it
# writes stays in WORKDIR. Its timing and report helpers are in benches/lib.sh.
#
# What it does:
#  1. builds backplan in release (`cargo build --release --locked`; see BENCH_BUILD and BENCH_PROFILE);
#  2. generates a deterministic ~700 MiB dataset in WORKDIR/data (seeded python3 generator, no
#     /dev/urandom): 100 SQL-like dumps of 4 MiB, 20,000 small files of 1-16 KiB in 200 folders,
#     100 MiB of incompressible data, symlinks, empty files and folders, a 1 GiB sparse file;
#  3. times, for backplan (driven through its CLI, as a user would) and for restic, each into its
#     own fresh repository in WORKDIR: cold backup (BENCH_ROUNDS times, default 3, each into
#     fresh repositories), unchanged re-backup (3 runs, with and without dropped page caches),
#     backup after changing ~1% of the data (3 runs, a different 1% each), backup after touching
#     every file's mtime (3 runs: every file read again), restore of the latest
#     backup into an empty folder (3 runs); then the same re-backups (unchanged, ~1% changed;
#     3 runs each) taken by the daemon (`backplan run`) when the file is saved;
#     wall time, CPU time (user + sys) and peak RSS of each step (GNU time %e %U %S %M);
#     repository sizes. Repeated steps report the quietest run (least wall time) and the spread;
#  4. checks that both restored trees equal the source (contents, symlinks, modes, sizes, mtimes)
#     and prints a Markdown report (also written to WORKDIR/report.md).
#
# Environment: BENCH_QUICK=1 uses a tenth of the dataset (to try the script; figures not
# comparable). BENCH_ROUNDS=N: cold backups per tool (default 3; the quietest is reported).
# BENCH_DROP_CACHES=0 keeps page caches warm between steps (default: drop them
# before every timed step when allowed, i.e. as root outside a restricted container).
# BENCH_BUILD=0 uses the binary already built; BENCH_PROFILE=dev (with
# CARGO_PROFILE_DEV_OPT_LEVEL=2 and a CARGO_TARGET_DIR of its own) measures a `dev` build where a
# release build of the dependencies is too slow; the report names the build.
# BENCH_STEPS=restore: only the restore rows (one cold backup per tool, BENCH_ROUNDS=1 implied,
# then the 3 restores alternating, the checks of the restored trees and restic's check).
# BENCH_BASELINE=/path/to/backplan: in each restore round, also a restore by that other build
# of backplan (e.g. main's) into a sandbox of its own, after backplan's and restic's: an A/B
# of two builds in the same run, reported as its own row (its ratio is to restic's).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARG=${1:-}
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

# ------------------------------------------------------------------------------------------
# Prerequisites

command -v cargo >/dev/null || die "cargo not found (install a Rust toolchain)"
command -v python3 >/dev/null || die "python3 not found"
command -v restic >/dev/null || die "restic not found (run scripts/install-test-deps.sh)"
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's GNU time (/usr/bin/time)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
  else
    die "/usr/bin/time (GNU time) is missing: apt-get install time"
  fi
fi
restic version >/dev/null || die "restic version failed"

WORK=$(work_dir "${ARG:-/tmp/backplan-engine-bench}" .backplan-engine-bench)
avail_kib=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
[ "$avail_kib" -gt $((8 * 1024 * 1024)) ] || say "warning: less than 8 GiB free in $WORK"

build_backplan

# ------------------------------------------------------------------------------------------
# Fresh work tree (only what this script creates)

DATA=$WORK/data
BPCFG=$WORK/backplan.toml
BPSTATE=$WORK/bp-state
SANDBOX=$WORK/sandbox
RREPO=$WORK/restic-repo
RRESTORE=$WORK/restic-restore
LOGS=$WORK/logs
RESULTS=$WORK/results.tsv
rm -rf "$DATA" "$BPCFG" "$BPSTATE" "$SANDBOX"* "$WORK"/.sandbox*.backplan-restore-* "$WORK"/round* \
  "$RREPO" "$RRESTORE"* "$LOGS" "$RESULTS" "$WORK/restic.pass" "$WORK/report.md"
mkdir -p "$LOGS"
: >"$RESULTS"

# ------------------------------------------------------------------------------------------
# Dataset: deterministic (random.Random with fixed seeds), regenerated on every run.

GEN=$WORK/gen.py
cat >"$GEN" <<'PY'
import os, random, sys

MiB = 1 << 20
FIXED_MTIME = 1704067200  # 2024-01-01T00:00:00Z: identical trees on every run
# BENCH_QUICK=1: a tenth of the dataset, to try the script out (figures not comparable).
QUICK = os.environ.get("BENCH_QUICK") == "1"
N_SQL, N_DIRS, N_RANDOM = (10, 20, 1) if QUICK else (100, 200, 10)

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
         "zulu account invoice customer order payment refund shipment warehouse product "
         "category supplier contract region branch ledger balance credit debit status pending "
         "approved rejected archived active inactive priority normal urgent low high note "
         "the of and to in for on with by from at as is was be are this that it not").split()
FIRST = "Anna Ben Chloe David Emma Felix Grace Hugo Ines Jonas Karin Lars Mia Noah Olga Paul".split()
LAST = "Smith Muller Rossi Dubois Novak Jensen Silva Kowalski Nagy Popescu Berg Costa".split()
CITIES = "Berlin Paris Madrid Rome Vienna Prague Warsaw Lisbon Dublin Oslo Athens Sofia".split()
TABLES = "customers orders invoices payments shipments products suppliers ledger audit_log".split()


def sql_lines(r, table, start_id):
    """Endless INSERT lines of a dump: varied, compressible like real dumps."""
    i = start_id
    while True:
        i += 1
        first, last = r.choice(FIRST), r.choice(LAST)
        note = " ".join(r.choice(WORDS) for _ in range(r.randint(3, 14)))
        yield (f"INSERT INTO {table} VALUES ({i}, '{first} {last}', "
               f"'{first.lower()}.{last.lower()}{r.randint(1, 999)}@example.com', "
               f"'{r.choice(CITIES)}', {r.randint(0, 10**7) / 100:.2f}, "
               f"'20{r.randint(10, 24):02d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d} "
               f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}', "
               f"{r.randint(0, 1)}, '{note}');\n")


def sql_text(r, size, table, start_id=0):
    parts, n = [], 0
    for line in sql_lines(r, table, start_id):
        parts.append(line)
        n += len(line)
        if n >= size:
            break
    return "".join(parts).encode()[:size]


def write_sql(path, seed, size=4 * MiB):
    r = random.Random(seed)
    table = TABLES[seed % len(TABLES)]
    head = (f"-- PostgreSQL-like dump {seed}\nBEGIN;\nCREATE TABLE {table} (id bigint primary key, "
            f"name text, email text, city text, amount numeric(12,2), created timestamp, "
            f"flag int, note text);\n").encode()
    body = sql_text(r, size - len(head) - len(b"COMMIT;\n"), table)
    with open(path, "wb") as f:
        f.write(head + body + b"COMMIT;\n")


def corpus(seed, size):
    r = random.Random(seed)
    out, n = [], 0
    while n < size:
        line = " ".join(r.choice(WORDS) for _ in range(r.randint(4, 16))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()


def small_content(r, text, size, tag):
    if r.random() < 0.3:  # a third binary-ish (incompressible), the rest text
        return r.randbytes(size)
    head = f"# {tag} {r.getrandbits(64):016x}\n".encode()
    off = r.randrange(0, len(text) - size)
    return (head + text[off:off + size])[:size]


def generate(root):
    os.makedirs(root)
    # 100 SQL-like dumps of 4 MiB
    os.makedirs(f"{root}/sql")
    for i in range(N_SQL):
        write_sql(f"{root}/sql/dump_{i:03d}.sql", 1000 + i)
    # 20,000 small files of 1-16 KiB in 200 folders
    text = corpus(7, 4 * MiB)
    r = random.Random(11)
    for d in range(N_DIRS):
        dd = f"{root}/small/d{d:03d}"
        os.makedirs(dd)
        for j in range(100):
            size = r.randint(1024, 16 * 1024)
            with open(f"{dd}/f{j:03d}.txt", "wb") as f:
                f.write(small_content(r, text, size, f"d{d:03d}/f{j:03d}"))
            if j % 37 == 0:
                os.chmod(f"{dd}/f{j:03d}.txt", 0o750)
    # 100 MiB of incompressible data in 10 files
    os.makedirs(f"{root}/random")
    r = random.Random(13)
    for i in range(N_RANDOM):
        with open(f"{root}/random/blob_{i:02d}.bin", "wb") as f:
            f.write(r.randbytes(10 * MiB))
    # symlinks (relative, to a folder, dangling), empty files and folders
    os.makedirs(f"{root}/links")
    for i in range(20):
        os.symlink(f"../small/d{i:03d}/f{i:03d}.txt", f"{root}/links/l{i:02d}")
    os.symlink("../small/d000", f"{root}/links/folder")
    os.symlink("../does/not/exist", f"{root}/links/dangling")
    os.makedirs(f"{root}/empty/a/b")
    for i in range(5):
        open(f"{root}/empty/e{i}", "wb").close()
    # one sparse file: 1 GiB apparent, 4 MiB of data
    os.makedirs(f"{root}/sparse")
    r = random.Random(17)
    with open(f"{root}/sparse/disk.img", "wb") as f:
        f.truncate(1 << 30)
        for off in (0, 256 * MiB, 512 * MiB, (1 << 30) - MiB):
            f.seek(off)
            f.write(r.randbytes(MiB))
    fix_mtimes(root)


def fix_mtimes(root):
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            p = os.path.join(dirpath, n)
            os.utime(p, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


def change(root, run="1"):
    """About 1% of the data: one dump rewritten, one edited in the middle and appended to,
    200 small files rewritten, 5 deleted, 5 added; run N (1, 2, 3) changes other files with
    other seeds, so every run is new data."""
    k = int(run) - 1
    write_sql(f"{root}/sql/dump_{(7 + k) % N_SQL:03d}.sql", 5007 + 1000 * k)  # 4 MiB, all new
    r = random.Random(5042 + 1000 * k)
    p = f"{root}/sql/dump_{(42 + k) % N_SQL:03d}.sql"
    with open(p, "r+b") as f:  # 1 MiB rewritten in the middle, 256 KiB appended
        f.seek(3 * MiB // 2)
        f.write(sql_text(r, MiB, "orders", 900000))
        f.seek(0, os.SEEK_END)
        f.write(sql_text(r, MiB // 4, "orders", 990000))
    text = corpus(8 + k, 2 * MiB)
    r = random.Random(5100 + 1000 * k)
    for i in range(N_DIRS):
        d, j = i, (i * 7 + k) % 100
        path = f"{root}/small/d{d:03d}/f{j:03d}.txt"
        size = r.randint(1024, 16 * 1024)
        with open(path, "wb") as f:
            f.write(small_content(r, text, size, f"changed {k} d{d:03d}/f{j:03d}"))
    for d in range(5):
        os.remove(f"{root}/small/d{d + N_DIRS // 2:03d}/f{99 - k:03d}.txt")
    os.makedirs(f"{root}/small/new{k}")
    for j in range(5):
        with open(f"{root}/small/new{k}/n{j}.txt", "wb") as f:
            f.write(small_content(r, text, 8192, f"new {k} {j}"))


if __name__ == "__main__":
    {"generate": generate, "change": change}[sys.argv[1]](*sys.argv[2:])
PY

say "== generating the dataset in $DATA"
t0=$(date +%s)
python3 "$GEN" generate "$DATA"
say "   done in $(($(date +%s) - t0)) s"
DATA_BYTES=$(du -sb "$DATA" | cut -f1)
DATA_DISK_KIB=$(du -sk "$DATA" | cut -f1)
DATA_FILES=$(find "$DATA" -type f | wc -l)
DATA_LINKS=$(find "$DATA" -type l | wc -l)
DATA_DIRS=$(find "$DATA" -type d | wc -l)

# ------------------------------------------------------------------------------------------
# Measurement (timed, drop_caches: benches/lib.sh)

caches_init

# ------------------------------------------------------------------------------------------
# backplan: a config with the dataset as a production directory instance and empty sandboxes
# (one per timed restore: a restore into a sandbox that holds data would first back it up).

# write_config FILE SANDBOX: state in FILE's folder (bp-state), the dataset as source;
# sandboxes SANDBOX1..3.
write_config() {
  mkdir -p "$2"1 "$2"2 "$2"3
  [ -z "${BENCH_BASELINE:-}" ] || mkdir -p "$2"4 "$2"5 "$2"6
  cat >"$1" <<EOF
# Written by benches/engine-vs-restic.sh; on-demand backups and the restore are appended below.
[daemon]
state_dir = "bp-state"

[schedule]
# Instances are created during the run, so today's slot is already past and the first daily
# backup is tomorrow: no daily backup can start in the middle of a measurement.
daily_at = "00:00"
timezone = "UTC"

[instances.bench]
type = "production"
version = "1"
source = { kind = "directory", path = "$DATA" }

EOF
  for i in 1 2 3 ${BENCH_BASELINE:+4 5 6}; do
    printf '\n[instances.sandbox%d]\ntype = "sandbox"\nversion = "1"\nsource = { kind = "directory", path = "%s" }\n' \
      "$i" "$2$i" >>"$1"
  done
}

# Asserts that the next apply does exactly the expected work (nothing time-driven sneaks in).
bp_expect() {
  local want=$1
  local got
  got=$("$BP" plan -c "$BPCFG" --json | python3 -c '
import json, sys
p = json.load(sys.stdin)
acts = " ".join(a["op"] + ":" + a["address"] for a in p["actions"])
due = " ".join(d.get("address", "?") for d in p["due"])
print(acts + (" due:" + due if due else "") + (" refused" if p["refusals"] else ""))')
  [ "$got" = "$want" ] || die "backplan plan: expected '$want', got '$got' (a daily backup due? rerun away from 00:00 UTC)"
}

BP_RUN=0
bp_backup() { # STEP CACHE
  BP_RUN=$((BP_RUN + 1))
  printf '\n[instances.bench.backups.run%d]\nlabel = "%s"\n' "$BP_RUN" "$1" >>"$BPCFG"
  bp_expect "create:backup.bench/run$BP_RUN"
  timed "$1" backplan "$2" "$BP" apply -c "$BPCFG" --auto-approve
}

export RESTIC_REPOSITORY=$RREPO RESTIC_PASSWORD_FILE=$WORK/restic.pass
python3 -c 'import random; print("%064x" % random.Random(99).getrandbits(256))' >"$RESTIC_PASSWORD_FILE"
chmod 600 "$RESTIC_PASSWORD_FILE"
restic_backup() { # STEP CACHE
  timed "$1" restic "$2" restic --no-cache backup "$DATA"
}


# ------------------------------------------------------------------------------------------
# The run

EXTRA_SANDBOXES=
if [ -n "${BENCH_BASELINE:-}" ]; then
  [ -x "$BENCH_BASELINE" ] || die "BENCH_BASELINE: no binary at $BENCH_BASELINE"
  EXTRA_SANDBOXES=" create:instance.sandbox4 create:instance.sandbox5 create:instance.sandbox6"
fi
LOAD_BEFORE=$(load_avg)
ROUNDS=${BENCH_ROUNDS:-3}
ONLY_RESTORE=0
if [ "${BENCH_STEPS:-all}" = restore ]; then ONLY_RESTORE=1 ROUNDS=1; fi
# Cold backups before the last round: fresh state and repositories each, deleted afterwards.
for ((round = 1; round < ROUNDS; round++)); do
  say "== cold backup, round $round of $ROUNDS"
  RDIR=$WORK/round$round
  rm -rf "$RDIR"
  mkdir -p "$RDIR"
  BPCFG=$RDIR/backplan.toml BP_RUN=0
  write_config "$BPCFG" "$RDIR/sandbox"
  bp_expect "create:instance.bench create:instance.sandbox1 create:instance.sandbox2 create:instance.sandbox3$EXTRA_SANDBOXES"
  timed setup backplan warm "$BP" apply -c "$BPCFG" --auto-approve
  bp_backup cold cold
  RESTIC_REPOSITORY=$RDIR/restic-repo timed setup restic warm restic --no-cache init
  RESTIC_REPOSITORY=$RDIR/restic-repo restic_backup cold cold
  rm -rf "$RDIR"
done
BPCFG=$WORK/backplan.toml BP_RUN=0
write_config "$BPCFG" "$SANDBOX"

say "== setup"
bp_expect "create:instance.bench create:instance.sandbox1 create:instance.sandbox2 create:instance.sandbox3$EXTRA_SANDBOXES"
timed setup backplan warm "$BP" apply -c "$BPCFG" --auto-approve
timed setup restic warm restic --no-cache init

say "== cold backup, round $ROUNDS of $ROUNDS (backplan creates its repository and key first)"
bp_backup cold cold
restic_backup cold cold

CHANGED_NOTE="(not run: BENCH_STEPS=restore)"
if [ "$ONLY_RESTORE" = 0 ]; then
say "== unchanged re-backup, cold caches (3 runs each)"
for _ in 1 2 3; do
  bp_backup unchanged-cold cold
  restic_backup unchanged-cold cold
done
say "== unchanged re-backup, warm caches (3 runs each)"
for _ in 1 2 3; do
  bp_backup unchanged-warm warm
  restic_backup unchanged-warm warm
done

say "== backup after changing ~1% of the data (3 runs, a different 1% each)"
before=$(du -sb "$DATA" | cut -f1)
for run in 1 2 3; do
  python3 "$GEN" change "$DATA" "$run"
  bp_backup changed cold
  restic_backup changed cold
done
say "== backup after touching the mtime of every file (3 runs: every file is read again)"
for run in 1 2 3; do
  find "$DATA" -type f -exec touch -m -d "@$((1704067200 + run * 86400))" {} +
  bp_backup touched cold
  restic_backup touched cold
done
CHANGED_NOTE="each run: one dump rewritten (4 MiB), another: 1 MiB rewritten in the middle + 256 KiB appended, one small file per folder rewritten (200), 5 deleted, 5 added (tree $before -> $(du -sb "$DATA" | cut -f1) bytes after the three)"
fi

say "== restore of the latest backup into an empty folder (3 runs each)"
for run in 1 2 3; do
  printf '\n[restores.r%d]\nfrom = "bench/run%d"\nto = "sandbox%d"\n' "$run" "$BP_RUN" "$run" >>"$BPCFG"
  bp_expect "restore:restore.r$run"
  [ -z "$(ls -A "$SANDBOX$run")" ] || die "sandbox$run is not empty"
  timed restore backplan cold "$BP" apply -c "$BPCFG" --auto-approve
  rm -rf "$RRESTORE"
  mkdir -p "$RRESTORE"
  timed restore restic cold restic --no-cache restore latest --target "$RRESTORE"
  # backplan syncs the restored tree before swapping it in (syncfs); restic does not sync.
  timed restore-sync restic asis sync
  if [ -n "${BENCH_BASELINE:-}" ]; then
    b=$((run + 3))
    printf '\n[restores.r%d]\nfrom = "bench/run%d"\nto = "sandbox%d"\n' "$b" "$BP_RUN" "$b" >>"$BPCFG"
    bp_expect "restore:restore.r$b"
    timed restore backplan-baseline cold "$BENCH_BASELINE" apply -c "$BPCFG" --auto-approve
  fi
done

# ------------------------------------------------------------------------------------------
# Checks: restored trees equal the source

listing() { # metadata of every entry below $1: type, mode, size, mtime, link target
  (cd "$1" && find . -mindepth 1 -printf '%P\t%y\t%m\t%s\t%T@\t%l\n' | LC_ALL=C sort)
}
check_tree() { # TOOL DIR
  local out=$LOGS/verify-$1.log
  local content=ok meta=ok
  diff -r --no-dereference "$DATA" "$2" >"$out" 2>&1 || content="DIFFERENT (see $out)"
  if ! diff <(listing "$DATA") <(listing "$2") >>"$out" 2>&1; then
    meta="$(($(grep -c '^<' "$out" || true))) entries differ (see $out)"
  fi
  printf '%s: contents and symlinks (diff -r --no-dereference): %s; type/mode/size/mtime of all %s entries: %s; sparse file on disk after restore: %s KiB\n' \
    "$1" "$content" "$(listing "$DATA" | wc -l)" "$meta" "$(du -k "$2/sparse/disk.img" | cut -f1)"
}
say "== verifying the restored trees"
VERIFY_BP=$(check_tree backplan "${SANDBOX}3")
VERIFY_RESTIC=$(check_tree restic "$RRESTORE$DATA")
say "   $VERIFY_BP"
say "   $VERIFY_RESTIC"

# ------------------------------------------------------------------------------------------
# The daemon path: `backplan run` on the same file and state; each backup is a new key saved
# into the file (written beside it, then renamed over it), taken by the daemon on its own.
# Timed from the rename to the daemon's "backup finished" log line (the 150 ms debounce
# included); CPU: the daemon's utime + stime over that span (/proc/PID/stat).

daemon_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$DPID/stat"; }
daemon_backup() { # STEP CACHE
  BP_RUN=$((BP_RUN + 1))
  local next=$WORK/backplan.toml.next n t0 t1 c0 c1
  { cat "$BPCFG"; printf '\n[instances.bench.backups.run%d]\nlabel = "%s"\n' "$BP_RUN" "$1"; } >"$next"
  case $2 in cold) drop_caches ;; *) sync ;; esac
  n=$(grep -c 'backup finished' "$LOGS/daemon.log" || true)
  c0=$(daemon_cpu)
  t0=$(date +%s.%N)
  mv "$next" "$BPCFG"
  until [ "$(grep -c 'backup finished' "$LOGS/daemon.log" || true)" -gt "$n" ]; do
    kill -0 "$DPID" 2>/dev/null || die "the daemon stopped (see $LOGS/daemon.log)"
    [ "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN {print (a - b > 600)}')" = 0 ] || die "daemon: no backup after 600 s"
    sleep 0.01
  done
  t1=$(date +%s.%N)
  c1=$(daemon_cpu)
  grep 'backup finished' "$LOGS/daemon.log" | tail -n 1 | grep -q "bench/run$BP_RUN" ||
    die "daemon: the finished backup is not bench/run$BP_RUN (see $LOGS/daemon.log)"
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" backplan-daemon "$(awk -v a="$t1" -v b="$t0" 'BEGIN {printf "%.2f", a - b}')" \
    0 "$(awk -v a="$c1" -v b="$c0" 'BEGIN {printf "%.2f", a - b}')" >>"$RESULTS"
  say "   $(tail -n 1 "$RESULTS" | tr '\t' ' ')"
}

if [ "$ONLY_RESTORE" = 0 ]; then
say "== the daemon: unchanged re-backup (cold caches) and after ~1% change, 3 runs each, alternating with restic"
RUST_LOG=info,backplan=debug "$BP" run -c "$BPCFG" >"$LOGS/daemon.log" 2>&1 &
DPID=$!
trap 'kill "$DPID" 2>/dev/null || true' EXIT
for _ in $(seq 1 500); do
  grep -q 'reconciling' "$LOGS/daemon.log" && break
  sleep 0.02
done
sleep 2 # the start-up reconcile (nothing to do) is over
for _ in 1 2 3; do
  daemon_backup daemon-unchanged cold
  restic_backup daemon-unchanged cold
done
for run in 4 5 6; do
  python3 "$GEN" change "$DATA" "$run"
  daemon_backup daemon-changed cold
  restic_backup daemon-changed cold
done
kill "$DPID"
wait "$DPID" 2>/dev/null || true
trap - EXIT
fi

# restic reads and checks every pack backplan wrote (untimed).
say "== restic check --read-data of backplan's repository"
if RESTIC_REPOSITORY=$BPSTATE/repository RESTIC_PASSWORD_FILE=$BPSTATE/keys/local.key \
  restic --no-cache check --read-data >"$LOGS/restic-check-backplan.log" 2>&1; then
  CHECK_NOTE="restic check --read-data of backplan's repository: no errors"
else
  CHECK_NOTE="restic check --read-data of backplan's repository: FAILED (see $LOGS/restic-check-backplan.log)"
fi
say "   $CHECK_NOTE"

LOAD_AFTER=$(load_avg)
BP_REPO_BYTES=$(du -sb "$BPSTATE/repository" | cut -f1)
BP_STATE_BYTES=$(($(du -sb "$BPSTATE" | cut -f1) - BP_REPO_BYTES))
R_REPO_BYTES=$(du -sb "$RREPO" | cut -f1)
BP_SNAPS=$(find "$BPSTATE/repository/snapshots" -type f | wc -l)
R_SNAPS=$(find "$RREPO/snapshots" -type f | wc -l)

# ------------------------------------------------------------------------------------------
# Report

row() { # LABEL STEP [RESTIC_STEP_TO_ADD]; BPTOOL: backplan (default) or backplan-daemon
  local bs bk bc rs rk rc bt=${BPTOOL:-backplan}
  bs=$(val "$2" "$bt" 3) bk=$(val "$2" "$bt" 4) bc=$(val "$2" "$bt" 5)
  [ -n "$bs" ] || return 0 # a step not run (BENCH_STEPS)
  rs=$(val "$2" restic 3) rk=$(val "$2" restic 4) rc=$(val "$2" restic 5)
  if [ -n "${3:-}" ]; then # restic: two commands (init + backup): times add up, peak is the max
    rs=$(awk -v a="$rs" -v b="$(val "$3" restic 3)" 'BEGIN {printf "%.2f", a + b}')
    rc=$(awk -v a="$rc" -v b="$(val "$3" restic 5)" 'BEGIN {printf "%.2f", a + b}')
    rk=$(awk -v a="$rk" -v b="$(val "$3" restic 4)" 'BEGIN {print (a > b ? a : b)}')
  fi
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$bs" "$bc" "$rs" "$rc" \
    "$(ratio "$bs" "$rs")" "$(ratio "$bc" "$rc")" "$(spread "$2" "$bt") / $(spread "$2" restic)" \
    "$([ "$bk" = 0 ] && echo n/a || mib "$bk")" "$(mib "$rk")"
}

REPORT=$WORK/report.md
{
  echo "Command: \`bash benches/engine-vs-restic.sh${ARG:+ $ARG}\`"
  echo
  machine_lines
  dev=$(df -P "$WORK" | awk 'NR==2 {print $1}')
  echo "- disk: $dev ($(findmnt -n -o FSTYPE --target "$WORK" 2>/dev/null || echo '?'); rotational flag $(cat "/sys/block/$(basename "$dev")/queue/rotational" 2>/dev/null || echo '?'))"
  echo "- dataset: $(hr "$DATA_BYTES") apparent ($(awk -v k="$DATA_DISK_KIB" 'BEGIN {printf "%.1f MiB", k / 1024}') on disk), $DATA_FILES files, $DATA_LINKS symlinks, $DATA_DIRS folders"
  echo "- $CACHE_NOTE"
  echo "- load average (1/5/15 min) before the timed steps: $LOAD_BEFORE; after: $LOAD_AFTER (other work on the machine adds noise, to both tools alike: their steps alternate)"
  echo
  echo "Quietest run (least wall time) of each repeated step; CPU = user + sys seconds of that run."
  echo
  echo "| step | backplan s | backplan CPU s | restic s | restic CPU s | ratio wall | ratio CPU | spread of wall s (backplan / restic) | backplan peak MiB | restic peak MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  row "cold backup, $ROUNDS rounds (backplan: creates repository + key; restic: init + backup)" cold setup
  row "unchanged re-backup, cold caches (3 runs)" unchanged-cold
  row "unchanged re-backup, warm caches (3 runs)" unchanged-warm
  row "backup after ~1% change (3 runs)" changed
  row "backup after every file's mtime was touched (3 runs)" touched
  row "restore latest into an empty folder (3 runs)" restore
  [ -z "${BENCH_BASELINE:-}" ] || BPTOOL=backplan-baseline row "restore, the baseline build BENCH_BASELINE=$BENCH_BASELINE (3 runs, in the same rounds)" restore
  BPTOOL=backplan-daemon row "daemon: unchanged re-backup, cold caches (3 runs)" daemon-unchanged
  BPTOOL=backplan-daemon row "daemon: backup after ~1% change (3 runs)" daemon-changed
  echo
  echo "Repository size (du -sb): backplan $(hr "$BP_REPO_BYTES") ($BP_SNAPS snapshots), restic $(hr "$R_REPO_BYTES") ($R_SNAPS snapshots); ratio $(ratio "$BP_REPO_BYTES" "$R_REPO_BYTES"). backplan's state besides the repository (sled, key): $(hr "$BP_STATE_BYTES")."
  echo
  echo "Details:"
  if [ "$ONLY_RESTORE" = 0 ]; then
  echo "- every run, seconds: unchanged cold: backplan $(runs unchanged-cold backplan) / restic $(runs unchanged-cold restic); unchanged warm: backplan $(runs unchanged-warm backplan) / restic $(runs unchanged-warm restic)"
  echo "- every cold backup: backplan $(runs cold backplan) / restic $(runs cold restic)"
  echo "- every backup after a change: backplan $(runs changed backplan) / restic $(runs changed restic)"
  echo "- every backup after touching every file's mtime (all files read again): backplan $(runs touched backplan) / restic $(runs touched restic)"
  fi
  echo "- every restore: backplan $(runs restore backplan) / restic $(runs restore restic)"
  [ -z "${BENCH_BASELINE:-}" ] || echo "- every restore by the baseline build: $(runs restore backplan-baseline)"
  [ "$ONLY_RESTORE" = 1 ] || echo "- daemon rows: \`backplan run\` takes each backup when the file is saved; wall from the rename of the file to its \"backup finished\" log line (150 ms debounce included), CPU the daemon's over that span; every run: unchanged $(runs daemon-unchanged backplan-daemon) / restic $(runs daemon-unchanged restic); changed $(runs daemon-changed backplan-daemon) / restic $(runs daemon-changed restic)"
  echo "- restic alone: init $(val setup restic 3) s, cold backup $(val cold restic 3) s, $(val cold restic 5) s CPU ($(mib "$(val cold restic 4)") MiB); backplan creating the instances (no repository yet): $(val setup backplan 3) s"
  echo "- the backplan restore includes the pre-restore safety backup of the (empty) sandbox that \`apply\` takes first, the staging folder, the syncfs of the restored tree and the swap; restic does not sync: a \`sync\` right after it took $(val restore-sync restic 3) s more"
  [ "$ONLY_RESTORE" = 1 ] || echo "- change: $CHANGED_NOTE"
  echo "- $VERIFY_BP"
  echo "- $VERIFY_RESTIC"
  echo "- $CHECK_NOTE"
} >"$REPORT"
echo
cat "$REPORT"
say ""
say "report: $REPORT; logs: $LOGS; raw figures: $RESULTS"

#!/usr/bin/env bash
# The daemon at scale (issue 13 items 4-6), every figure beside its baseline, in one run:
#
#   bash benches/daemon-scale.sh [WORKDIR]      (default WORKDIR: /tmp/backplan-scale-bench)
#
#  1. save -> applied on 1,000 instances and 100,000 recorded backups: `cargo bench --bench
#     scale_host` writes the file and fills the state through the real store code (the edited
#     backup is a real one: `backplan apply` takes it first, into a local repository);
#     `backplan run` starts on it (system clock: nothing is due); BENCH_ROUNDS (default 20)
#     times the label of that on-demand backup is changed by rename into place, timed from just
#     before the `mv` to the timestamp of the daemon's `label and notes updated` log line (the
#     record changed: what `show` reports), with the daemon's `reloaded` line splitting it into
#     save -> file read and valid (inotify, the 150 ms debounce, parse + validate) and ->
#     applied (plan + one record written and flushed), and to its `snapshot tags rewritten` line
#     (the snapshot's tags rewritten under one exclusive repository lock);
#     BENCH_CLI_ROUNDS (default 5) more as a client sees them, polling `backplan show` (over the
#     control socket) every ~10 ms; `backplan status` through the socket and `backplan plan`
#     with the daemon running (3 runs each);
#  2. idle: after BENCH_SETTLE_SECS (default 15) the daemon is left alone BENCH_IDLE_SECS
#     (default 60); context switches per thread from /proc/PID/task/*/status, grouped by name
#     (backplan's own threads, sled's apart);
#  3. the plan of 10,000 instances (400,000 records) beside the bare `toml` parse of the same
#     file: `cargo bench --bench plan` (divan: fastest, median, slowest), the daemon's path
#     (records in memory: parse + validate + plan, and the plan alone) against
#     `toml::from_str::<toml::Table>`, and (d) the daemon on a one-line edit (parse + validate
#     + the incremental plan from its cache); then the one-shot CLI (`backplan plan`, which reads the
#     store) 3 times with /usr/bin/time.
# Repeated figures give the quietest run (least time), the median and the spread (min-max).
#
# BENCH_PROFILE: `release` (default) or `dev` (opt-level 2 for backplan: no release build of
# the dependencies; add CARGO_PROFILE_DEV_OPT_LEVEL=2 in the environment). BENCH_BUILD=0 uses
# what is built (the newest bench binaries in the target folder). BENCH_PLAN=0 skips step 3.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-/tmp/backplan-scale-bench}
ROUNDS=${BENCH_ROUNDS:-20}
CLI_ROUNDS=${BENCH_CLI_ROUNDS:-5}
SETTLE=${BENCH_SETTLE_SECS:-15}
IDLE=${BENCH_IDLE_SECS:-60}
PROFILE=${BENCH_PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { printf '%s' "$EPOCHREALTIME"; }
epoch_of() { date -u -d "$1" +%s.%6N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }
# n quietest median slowest of a column of numbers
stats() {
  sort -n | awk '{ v[NR] = $1 } END {
    n = NR; if (!n) { print "0 - - -"; exit }
    med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    printf "%d %.1f %.1f %.1f\n", n, v[1], med, v[n] }'
}

[ "$PROFILE" = release ] && DIR=release || DIR=debug
BIN=$TARGET/$DIR/backplan
cd "$ROOT"
if [ "${BENCH_BUILD:-1}" = 1 ]; then
  say "== building ($PROFILE)"
  cargo build --locked --profile "$PROFILE" --bin backplan
fi
[ -x "$BIN" ] || die "$BIN is missing"
rm -rf "$WORK" && mkdir -p "$WORK"
HOST=$WORK/host
LOG=$WORK/daemon.log
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src benches Cargo.toml || echo "+changes")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------------------------------
say "== writing the host: 1,000 instances, 100,000 backups"
T0=$(now)
if [ "${BENCH_BUILD:-1}" = 1 ]; then
  cargo bench --locked --profile "$PROFILE" --bench scale_host --bench plan --no-run 2> "$WORK/build-benches.log"
fi
bench_bin() { ls -t "$TARGET/$DIR"/deps/"$1"-* 2>/dev/null | grep -v '\.d$' | head -n 1; }
BACKPLAN_SCALE_WRITE=$HOST BACKPLAN_SCALE_BIN=$BIN "$(bench_bin scale_host)" 2> "$WORK/generate.log" \
  || { cat "$WORK/generate.log" >&2; die "the generator failed"; }
GEN_S=$(awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
grep scale_host: "$WORK/generate.log" >&2
CONF=$HOST/backplan.toml
FILE_BYTES=$(stat -c %s "$CONF")
STATE_BYTES=$(du -sb "$HOST/state" | cut -f1)

DPID=
stop_daemon() { if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then kill -TERM "$DPID"; wait "$DPID" || true; fi; DPID=; }
trap 'stop_daemon >/dev/null 2>&1 || true' EXIT
( cd "$HOST" && exec env -u JOURNAL_STREAM -u NOTIFY_SOCKET -u WATCHDOG_USEC -u WATCHDOG_PID \
    RUST_LOG=info NO_COLOR=1 "$BIN" run -c "$CONF" --log-format human 2> "$LOG" ) &
DPID=$!
START_T=$(now)
wait_idle() {
  local deadline=$((SECONDS + ${1:-120}))
  until tail -n 1 "$LOG" 2>/dev/null | grep -q ' INFO nothing to do$'; do
    kill -0 "$DPID" 2>/dev/null || die "the daemon exited; see $LOG"
    [ "$SECONDS" -lt "$deadline" ] || die "the daemon did not become idle; see $LOG"
    sleep 0.01
  done
}
wait_idle 300
STARTUP_S=$(awk -v a="$START_T" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
RSS_START=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status")
say "   started and idle after ${STARTUP_S} s"

# ------------------------------------------------------------------------------------------
INST=i00500
OLD='label = "Before change CR-500-5"'
grep -qxF "$OLD" "$CONF" || die "the generated file has no line $OLD"
cp "$CONF" "$WORK/template.toml"
save() {
  sed "s|^$OLD\$|label = \"$1\"|" "$WORK/template.toml" > "$HOST/new.toml"
  local t; t=$(now); mv -f "$HOST/new.toml" "$CONF"; printf '%s' "$t"
}
PATTERN=" INFO label and notes updated address=\"backup.$INST/b05\""
TAGGED=" INFO snapshot tags rewritten address=\"backup.$INST/b05\""
updated() { grep -c "$PATTERN" "$LOG" || true; }
tagged() { grep -c "$TAGGED" "$LOG" || true; }
failures() { grep -c " ERROR .*backup.$INST/b05" "$LOG" || true; }
SAMPLES=$WORK/latency.tsv
: > "$SAMPLES"
# The daemon's CPU seconds (user + system, all threads) from /proc/PID/stat.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$DPID/stat"; }
CPU0=$(cpu_s); EDIT_T0=$(now)
say "== save -> applied, $ROUNDS rounds"
for i in $(seq 1 "$ROUNDS"); do
  before=$(updated); before_tags=$(tagged); before_failed=$(failures)
  t0=$(save "Benchmark round $i")
  deadline=$((SECONDS + 30))
  until [ "$(updated)" -gt "$before" ] && [ "$(tagged)" -gt "$before_tags" ]; do
    [ "$(failures)" -eq "$before_failed" ] || die "round $i: the edit failed; see $LOG"
    [ "$SECONDS" -lt "$deadline" ] || die "round $i: not applied after 30 s; see $LOG"
    sleep 0.005
  done
  wait_idle 60
  applied=$(grep "$PATTERN" "$LOG" | tail -n 1)
  retagged=$(grep "$TAGGED" "$LOG" | tail -n 1)
  reloaded=$(grep -F ': reloaded' "$LOG" | tail -n 1)
  ta=$(epoch_of "${applied%% *}"); tr=$(epoch_of "${reloaded%% *}"); tt=$(epoch_of "${retagged%% *}")
  printf '%s\t%s\t%s\t%s\t%s\n' "$(ms "$t0" "$ta")" "$(ms "$t0" "$tr")" "$(ms "$tr" "$ta")" \
    "$(ms "$t0" "$tt")" "$(ms "$ta" "$tt")" >> "$SAMPLES"
  sleep "0.$((100 + RANDOM % 201))"
done
EDIT_CPU=$(awk -v a="$CPU0" -v b="$(cpu_s)" 'BEGIN { printf "%.2f", b - a }')
EDIT_WALL=$(awk -v a="$EDIT_T0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
CLI=$WORK/latency-cli.tsv
: > "$CLI"
say "== as a client sees it, $CLI_ROUNDS rounds"
for i in $(seq 1 "$CLI_ROUNDS"); do
  label="Client round $i"
  t0=$(save "$label")
  until "$BIN" show -c "$CONF" "$INST/b05" --json 2>/dev/null | grep -qF "\"$label\""; do sleep 0.01; done
  ms "$t0" "$(now)" >> "$CLI"; echo >> "$CLI"
  deadline=$((SECONDS + 30))
  until [ "$(grep -c "$TAGGED" "$LOG")" -ge "$((ROUNDS + i))" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "client round $i: the tags not rewritten after 30 s; see $LOG"
    sleep 0.01
  done
  wait_idle 60
done
STATUS=$WORK/status.tsv
: > "$STATUS"
for i in 1 2 3; do
  t0=$(now); "$BIN" status -c "$CONF" > /dev/null; ms "$t0" "$(now)" >> "$STATUS"; echo >> "$STATUS"
done
PLAND=$WORK/plan-daemon.tsv
: > "$PLAND"
for i in 1 2 3; do
  t0=$(now); "$BIN" plan -c "$CONF" > /dev/null; ms "$t0" "$(now)" >> "$PLAND"; echo >> "$PLAND"
done
read -r N Q M S < <(cut -f1 "$SAMPLES" | stats)
read -r PDN PDQ PDM PDS < <(grep . "$PLAND" | stats)
read -r _ RQ RM RS < <(cut -f2 "$SAMPLES" | stats)
read -r _ AQ AM AS < <(cut -f3 "$SAMPLES" | stats)
read -r _ TQ TM TS < <(cut -f4 "$SAMPLES" | stats)
read -r _ GQ GM GS < <(cut -f5 "$SAMPLES" | stats)
read -r CN CQ CM CS < <(grep . "$CLI" | stats)
read -r SN SQ SM SS < <(grep . "$STATUS" | stats)

# ------------------------------------------------------------------------------------------
threads() {
  for t in /proc/"$DPID"/task/*; do
    printf '%s|%s|%s\n' "${t##*/}" "$(cat "$t/comm" 2>/dev/null)" \
      "$(awk '/ctxt_switches:/ { s += $2 } END { print s + 0 }' "$t/status" 2>/dev/null)"
  done | sort -t'|' -k1,1
}
say "== idle: ${SETTLE} s settling, ${IDLE} s measured"
sleep "$SETTLE"
threads > "$WORK/idle-start.txt"
RSS0=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status")
sleep "$IDLE"
threads > "$WORK/idle-end.txt"
RSS=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status")
IDLE_TABLE=$(join -t'|' "$WORK/idle-start.txt" "$WORK/idle-end.txt" \
  | awk -F'|' -v secs="$IDLE" '{ n = $2; sub(/[-_]?[0-9]+$/, "", n); c[n]++; w[n] += $5 - $3 }
      END { for (n in c) printf "| %s | %d | %d | %.2f |\n", n, c[n], w[n], w[n] / secs }' | sort)
stop_daemon

# ------------------------------------------------------------------------------------------
PLAN_TABLE="(skipped: BENCH_PLAN=0)"
CLI_PLAN="(skipped)"
if [ "${BENCH_PLAN:-1}" = 1 ]; then
  say "== plan of 10,000 instances beside the bare toml parse (divan)"
  BACKPLAN_BENCH_SKIP_MEMORY=1 "$(bench_bin plan)" --bench \
    a_whole_parse_validate_plan c_plan baseline_toml_table b_parse_validate \
    d_daemon_edit_parse_validate_incremental_plan > "$WORK/plan-bench.txt" 2> "$WORK/plan-bench.err" \
    || { tail -n 20 "$WORK/plan-bench.txt" "$WORK/plan-bench.err" >&2; die "cargo bench --bench plan failed"; }
  # (the fixture's lines go to stderr, apart, so that each divan row stays on one line)
  # divan's rows: name, fastest, slowest, median, mean, samples, iters (a tree drawn with │ ├ ╰).
  PLAN_TABLE=$(grep -E '(a_whole|c_plan|baseline_toml_table|b_parse_validate|d_daemon_edit)[a-z_]* ' "$WORK/plan-bench.txt" \
    | sed 's/[│├╰─]//g' | awk '{ printf "| %s | %s %s | %s %s | %s %s |\n", $1, $2, $3, $6, $7, $4, $5 }')
  say "== the one-shot CLI: backplan plan (reads the store), 3 runs"
  BACKPLAN_BENCH_WRITE=$WORK/host10k "$(bench_bin plan)" > /dev/null 2>&1
  : > "$WORK/cli-plan.tsv"
  CLI_PLAN=
  for i in 1 2 3; do
    if ! /usr/bin/time -f '%e %M' -o "$WORK/time.txt" "$BIN" plan -c "$WORK/host10k/backplan.toml" \
      --at 2026-05-04T00:05:00Z > /dev/null 2> "$WORK/cli-plan.err"; then
      CLI_PLAN="refused: $(head -n 1 "$WORK/cli-plan.err")"
      break
    fi
    cat "$WORK/time.txt" >> "$WORK/cli-plan.tsv"
  done
  if [ -z "$CLI_PLAN" ]; then
    read -r _ PQ PM PS < <(cut -d' ' -f1 "$WORK/cli-plan.tsv" | stats)
    PRSS=$(cut -d' ' -f2 "$WORK/cli-plan.tsv" | sort -n | head -n 1)
    CLI_PLAN="quietest $PQ s, median $PM s, slowest $PS s; peak RSS $((PRSS / 1024)) MiB (least of 3)"
  fi
  rm -rf "$WORK/host10k"
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT, profile $PROFILE; $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $(rustc --version)."
  echo "Load average at the start / end: $LOAD_START / $LOAD_END."
  echo "Host: $FILE_BYTES bytes of TOML, state $((STATE_BYTES / 1048576)) MiB on disk; written in ${GEN_S} s; daemon start to idle: ${STARTUP_S} s, VmRSS then $((RSS_START / 1024)) MiB."
  echo
  echo "| 1,000 instances, 100,000 backups | quietest | median | slowest | n |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  echo "| **save -> applied** (label edit, \`mv\` -> \`label and notes updated\`) | **$Q ms** | **$M ms** | $S ms | $N |"
  echo "| of which save -> file read and valid (inotify, 150 ms debounce, parse, validate) | $RQ ms | $RM ms | $RS ms | $N |"
  echo "| of which -> applied (plan, one record written and flushed) | $AQ ms | $AM ms | $AS ms | $N |"
  echo "| **save -> snapshot tags rewritten** (\`mv\` -> \`snapshot tags rewritten\`) | **$TQ ms** | **$TM ms** | $TS ms | $N |"
  echo "| of which applied -> tags rewritten (one exclusive lock: new snapshot, record, old one forgotten) | $GQ ms | $GM ms | $GS ms | $N |"
  echo "| daemon CPU over the $N rounds (user + system; wall ${EDIT_WALL} s with the pauses) | $EDIT_CPU s | | | |"
  echo "| save -> seen by \`backplan show\` polled every ~10 ms | $CQ ms | $CM ms | $CS ms | $CN |"
  echo "| \`backplan status\` through the socket (process included) | $SQ ms | $SM ms | $SS ms | $SN |"
  echo "| \`backplan plan\` with the daemon running (CLI parses, asks the daemon for the records) | $PDQ ms | $PDM ms | $PDS ms | $PDN |"
  echo
  echo "Idle, ${IDLE} s after ${SETTLE} s settling; VmRSS $((RSS0 / 1024)) -> $((RSS / 1024)) MiB. Context switches per thread name:"
  echo
  echo "| thread | threads | switches | per second |"
  echo "| --- | ---: | ---: | ---: |"
  printf '%s\n' "$IDLE_TABLE"
  echo
  echo "Plan of 10,000 instances / 400,000 records (divan):"
  echo
  echo "| benchmark | fastest | median | slowest |"
  echo "| --- | ---: | ---: | ---: |"
  printf '%s\n' "$PLAN_TABLE"
  echo
  echo "One-shot \`backplan plan\` of the same host (reads the store): $CLI_PLAN."
} > "$WORK/report.md"
cat "$WORK/report.md"

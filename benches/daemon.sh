#!/usr/bin/env bash
# Daemon benchmark: how long from saving backplan.toml to the change being applied, and what
# the daemon costs while it waits.
#
#   bash benches/daemon.sh [WORKDIR]        (default WORKDIR: /tmp/backplan-daemon-bench)
#
# Needs: a Rust toolchain, GNU coreutils (date), awk; strace for the optional attribution
# window (scripts/install-test-deps.sh installs it). Takes about 2.5 minutes after the build.
# Everything it writes stays in WORKDIR (the daemon's log, raw samples, report.md).
#
# What it does:
#  1. builds backplan in release (`cargo build --release --locked`);
#  2. copies examples/quickstart/backplan.toml into WORKDIR/site, with a one-file data/contoso,
#     starts `backplan run` there (RUST_LOG=info, human log format, stderr to WORKDIR/daemon.log)
#     and waits until `backplan backups --json` shows the on-demand backup completed;
#  3. latency, BENCH_ROUNDS times (default 50): changes the `label` of the on-demand backup (a
#     metadata-only `update backup`), saving as editors and git do: write new.toml, then
#     `mv new.toml backplan.toml`. The save time is $EPOCHREALTIME right before `mv` starts: the
#     rename happens inside the `mv` (fork+exec, a few ms, reported separately), so a latency is
#     at most that much too long, never too short. The apply time is the timestamp the daemon puts on its own `label and notes updated` log line
#     (same wall clock), so the measurement does not include any polling. After each round the
#     script checks with `backplan backups --json` (over the control socket) that the new label
#     is there, waits for the daemon to be idle again (its follow-up reconcile logged `nothing
#     to do`) and pauses 100-300 ms. Each latency includes the 150 ms debounce.
#     Then BENCH_CLI_ROUNDS more rounds (default 10) measured the way a client sees it: polling
#     `backplan backups --json` every ~10 ms until the label appears (a process start per poll).
#  4. idle: waits BENCH_SETTLE_SECS (default 15 s; tokio's blocking threads exit after 10 s
#     unused), then leaves the daemon alone for BENCH_IDLE_SECS (default 60 s) and reads, from
#     /proc: VmRSS/VmHWM at the end, utime+stime before/after (clock ticks -> s), and every
#     thread's voluntary + nonvoluntary context switches before/after (each wake-up of a
#     sleeping thread ends in one switch out; reading /proc does not disturb the daemon);
#  5. attribution (when strace is installed and allowed; BENCH_STRACE_SECS, default 20, 0 to
#     skip): `strace -f -tt -p PID -e trace=epoll_wait,epoll_pwait,futex,nanosleep,
#     clock_nanosleep,fsync,fdatasync` for that long, then syscalls returned per thread and the
#     median interval between them. strace itself perturbs (attaching interrupts each blocked
#     call once), which is why the counts of step 4 come from /proc;
#  6. prints a Markdown report (also WORKDIR/report.md) and stops the daemon with SIGTERM.
#
# BENCH_BUILD=0 skips the build (uses target/release/backplan as it is).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARG=${1:-}
WORK=${ARG:-/tmp/backplan-daemon-bench}
MARKER=.backplan-daemon-bench
ROUNDS=${BENCH_ROUNDS:-50}
CLI_ROUNDS=${BENCH_CLI_ROUNDS:-10}
SETTLE=${BENCH_SETTLE_SECS:-15}
IDLE=${BENCH_IDLE_SECS:-60}
STRACE_SECS=${BENCH_STRACE_SECS:-20}
BIN=$ROOT/target/release/backplan

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ------------------------------------------------------------------------------------------
# Prerequisites and work folder

command -v cargo >/dev/null || die "cargo not found (install a Rust toolchain)"
date -u -d '2020-01-01T00:00:00.5Z' +%s.%6N >/dev/null 2>&1 || die "GNU date is needed"
[ -n "${EPOCHREALTIME:-}" ] || die "bash 5 is needed (\$EPOCHREALTIME)"
HAVE_STRACE=0
if [ "$STRACE_SECS" -gt 0 ] && command -v strace >/dev/null; then HAVE_STRACE=1; fi

if [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ] && [ ! -e "$WORK/$MARKER" ]; then
  die "$WORK exists, is not empty and was not made by this script; pick another WORKDIR"
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
# A fresh start each run: only what this script made before (the marker says so).
find "$WORK" -mindepth 1 -maxdepth 1 ! -name "$MARKER" -exec rm -rf {} +
touch "$WORK/$MARKER"

if [ "${BENCH_BUILD:-1}" != 0 ]; then
  say "== building backplan (cargo build --release --locked)"
  (cd "$ROOT" && cargo build --release --locked) >&2
fi
[ -x "$BIN" ] || die "$BIN missing (run cargo build --release --locked)"

SITE=$WORK/site
CONF=$SITE/backplan.toml
LOG=$WORK/daemon.log
mkdir -p "$SITE/data/contoso"
echo hello > "$SITE/data/contoso/a.txt"
# The example, with its editor-schema comment pointed at the repository's schema.
sed "s|^#:schema .*|#:schema $ROOT/config/backplan.schema.json|" \
  "$ROOT/examples/quickstart/backplan.toml" > "$CONF"
grep -q '^label = "Before solution import"$' "$CONF" \
  || die "examples/quickstart/backplan.toml has no on-demand backup labelled \"Before solution import\""
LABEL_LINE='label = "Before solution import"'

bp() { "$BIN" "$@"; }
now() { printf '%s' "$EPOCHREALTIME"; }
# RFC 3339 (the daemon's log timestamps, UTC, microseconds) -> epoch seconds.
epoch_of() { date -u -d "$1" +%s.%6N; }
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }

# ------------------------------------------------------------------------------------------
# The daemon

DPID=
stop_daemon() {
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
    kill -TERM "$DPID" 2>/dev/null || true
    local rc=0
    wait "$DPID" || rc=$?
    DPID=
    return "$rc"
  fi
  DPID=
}
trap 'stop_daemon >/dev/null 2>&1 || true' EXIT

say "== starting the daemon in $SITE"
# Timestamps in the log: not under journald (JOURNAL_STREAM), plain text (NO_COLOR).
( cd "$SITE" && exec env -u JOURNAL_STREAM -u NOTIFY_SOCKET -u WATCHDOG_USEC -u WATCHDOG_PID \
    RUST_LOG=info NO_COLOR=1 "$BIN" run -c "$CONF" --log-format human 2> "$LOG" ) &
DPID=$!
START_T=$(now)

# Idle again: the last log line is a reconcile that found nothing to do (every reconcile that
# did work is followed by one that finds nothing, in these scenarios).
wait_idle() {
  local deadline=$((SECONDS + ${1:-60}))
  while :; do
    kill -0 "$DPID" 2>/dev/null || die "the daemon exited; see $LOG"
    if tail -n 1 "$LOG" 2>/dev/null | grep -q ' INFO nothing to do$'; then return 0; fi
    [ "$SECONDS" -lt "$deadline" ] || die "the daemon did not become idle in time; see $LOG"
    sleep 0.01
  done
}

deadline=$((SECONDS + 180))
until bp backups -c "$CONF" --json 2>/dev/null | tr -d ' \n' | grep -q '"key":"before-import"[^}]*"status":"completed"'; do
  kill -0 "$DPID" 2>/dev/null || die "the daemon exited; see $LOG"
  [ "$SECONDS" -lt "$deadline" ] || die "the on-demand backup was not completed after 180 s; see $LOG"
  sleep 0.1
done
wait_idle 60
FIRST_APPLY_S=$(awk -v a="$START_T" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
HWM_AFTER_FIRST=$(awk '/^VmHWM:/ {print $2}' "/proc/$DPID/status")
say "   first apply done (${FIRST_APPLY_S} s after start, peak RSS so far $((HWM_AFTER_FIRST / 1024)) MiB)"

# ------------------------------------------------------------------------------------------
# Latency: save -> applied

updated_count() { grep -c ' INFO label and notes updated address="backup.contoso/before-import"' "$LOG" || true; }

# Writes the file with label $1 as new.toml, renames it into place; prints "t_before t_after".
save_label() {
  sed "s|^$LABEL_LINE\$|label = \"$1\"|" "$TEMPLATE" > "$SITE/new.toml"
  local t0 t1
  t0=$(now)
  mv -f "$SITE/new.toml" "$CONF"
  t1=$(now)
  printf '%s %s\n' "$t0" "$t1"
}
TEMPLATE=$WORK/template.toml
cp "$CONF" "$TEMPLATE"

has_label() { bp backups -c "$CONF" --json 2>/dev/null | grep -qF "\"label\": \"$1\""; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RUSTC_BEFORE=$(pgrep -c -x rustc || true)
say "== latency: $ROUNDS label changes (load average $LOAD_BEFORE, rustc processes: $RUSTC_BEFORE)"
SAMPLES=$WORK/latency.tsv
printf 'round\tsaved_epoch\tmv_ms\treconcile_start_ms\tapplied_ms\n' > "$SAMPLES"
for i in $(seq 1 "$ROUNDS"); do
  label="Benchmark round $i"
  before=$(updated_count)
  read -r t0 t1 < <(save_label "$label")
  deadline=$((SECONDS + 30))
  until [ "$(updated_count)" -gt "$before" ]; do
    kill -0 "$DPID" 2>/dev/null || die "the daemon exited; see $LOG"
    [ "$SECONDS" -lt "$deadline" ] || die "round $i: no 'label and notes updated' after 30 s; see $LOG"
    sleep 0.005
  done
  wait_idle 30
  line=$(grep ' INFO label and notes updated address="backup.contoso/before-import"' "$LOG" | tail -n 1)
  # The reconcile that applied it: the last `reconciling reason=FileChanged` before that line.
  rline=$(grep -E ' INFO (reconciling reason=FileChanged|label and notes updated address="backup.contoso/before-import")$' "$LOG" \
    | grep -B1 -F "$line" | head -n 1)
  t_applied=$(epoch_of "${line%% *}")
  t_reconcile=$(epoch_of "${rline%% *}")
  has_label "$label" || die "round $i: the log says applied but \`backplan backups --json\` does not show \"$label\""
  printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$t0" "$(ms_between "$t0" "$t1")" \
    "$(ms_between "$t0" "$t_reconcile")" "$(ms_between "$t0" "$t_applied")" >> "$SAMPLES"
  sleep "0.$((100 + RANDOM % 201))"
done
grep -q 'reason=FileChanged' "$LOG" || die "no FileChanged reconcile in $LOG"

# As a client sees it: poll the CLI (control socket) every ~10 ms.
CLI_SAMPLES=$WORK/latency-cli.tsv
printf 'round\tseen_ms\tpolls\n' > "$CLI_SAMPLES"
if [ "$CLI_ROUNDS" -gt 0 ]; then
  say "== latency seen by a client polling \`backplan backups --json\`: $CLI_ROUNDS changes"
  for i in $(seq 1 "$CLI_ROUNDS"); do
    label="Client-polled round $i"
    read -r t0 _ < <(save_label "$label")
    polls=0
    deadline=$((SECONDS + 30))
    until has_label "$label"; do
      polls=$((polls + 1))
      [ "$SECONDS" -lt "$deadline" ] || die "client round $i: label not visible after 30 s; see $LOG"
      sleep 0.01
    done
    t_seen=$(now)
    printf '%s\t%s\t%s\n' "$i" "$(ms_between "$t0" "$t_seen")" "$((polls + 1))" >> "$CLI_SAMPLES"
    wait_idle 30
    sleep "0.$((100 + RANDOM % 201))"
  done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Statistics of a column of numbers: n median p95 min max mean (p95: nearest rank).
stats() {
  sort -n | awk '{ v[NR] = $1; s += $1 }
    END {
      n = NR; if (n == 0) { print "0 - - - - -"; exit }
      med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      r = int(0.95 * n); if (r < 0.95 * n) r++; if (r < 1) r = 1
      printf "%d %.1f %.1f %.1f %.1f %.1f\n", n, med, v[r], v[1], v[n], s / n
    }'
}
read -r N MED P95 MIN MAX MEAN < <(tail -n +2 "$SAMPLES" | cut -f5 | stats)
read -r _ RMED RP95 RMIN RMAX _ < <(tail -n +2 "$SAMPLES" | cut -f4 | stats)
read -r _ MVMED _ _ MVMAX _ < <(tail -n +2 "$SAMPLES" | cut -f3 | stats)
APPLY_ONLY=$(tail -n +2 "$SAMPLES" | awk -F'\t' '{ print $5 - $4 }' | stats)
read -r _ AMED AP95 AMIN AMAX _ <<< "$APPLY_ONLY"
read -r CN CMED CP95 CMIN CMAX _ < <(tail -n +2 "$CLI_SAMPLES" | cut -f2 | stats)
CPOLLS=$(tail -n +2 "$CLI_SAMPLES" | awk -F'\t' '{ s += $3 } END { if (NR) printf "%.0f", s / NR; else print "-" }')
say "   save -> applied: median $MED ms, p95 $P95 ms, min $MIN, max $MAX (n=$N)"

# ------------------------------------------------------------------------------------------
# Idle cost

# "tid|comm|voluntary|nonvoluntary" for every thread of the daemon.
threads() {
  local t
  for t in /proc/"$DPID"/task/*; do
    [ -r "$t/status" ] || continue
    printf '%s|%s|%s|%s\n' "${t##*/}" "$(cat "$t/comm" 2>/dev/null)" \
      "$(awk '/^voluntary_ctxt_switches:/ {print $2}' "$t/status" 2>/dev/null)" \
      "$(awk '/^nonvoluntary_ctxt_switches:/ {print $2}' "$t/status" 2>/dev/null)"
  done | sort -t'|' -k1,1
}
# utime+stime of the whole process (exited threads included), in clock ticks.
cpu_ticks() { sed 's/.*) //' "/proc/$DPID/stat" | awk '{ print $12 + $13 }'; }
status_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$DPID/status"; }

LOG_LINES_BEFORE_SETTLE=$(wc -l < "$LOG")
threads > "$WORK/threads-before-settle.txt"
say "== settling for ${SETTLE} s, then ${IDLE} s idle"
sleep "$SETTLE"
threads > "$WORK/threads-idle-start.txt"
T0=$(cpu_ticks)
LOG_LINES0=$(wc -l < "$LOG")
sleep "$IDLE"
T1=$(cpu_ticks)
threads > "$WORK/threads-idle-end.txt"
LOG_LINES1=$(wc -l < "$LOG")
grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|Threads):' "/proc/$DPID/status" > "$WORK/status-idle-end.txt"
RSS=$(status_kib VmRSS); HWM=$(status_kib VmHWM); ANON=$(status_kib RssAnon); FILE=$(status_kib RssFile)
NTHREADS=$(status_kib Threads)
HZ=$(getconf CLK_TCK)
CPU_S=$(awk -v a="$T0" -v b="$T1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')
EXITED_SETTLE=$(join -t'|' -v1 "$WORK/threads-before-settle.txt" "$WORK/threads-idle-start.txt" | cut -d'|' -f2 | sort | uniq -c | awk '{ $1 = $1 "x"; print }' | paste -sd, - || true)

# Per thread: wake-ups (switches out) during the window; grouped by name.
WAKES=$WORK/idle-wakeups.txt
join -t'|' "$WORK/threads-idle-start.txt" "$WORK/threads-idle-end.txt" \
  | awk -F'|' '{ printf "%s|%s|%d|%d\n", $1, $2, $6 - $3, $7 - $4 }' > "$WAKES"
TOTAL_WAKES=$(awk -F'|' '{ s += $3 + $4 } END { print s + 0 }' "$WAKES")
GONE=$(join -t'|' -v1 "$WORK/threads-idle-start.txt" "$WORK/threads-idle-end.txt" | cut -d'|' -f2 | paste -sd, - || true)
NEW=$(join -t'|' -v2 "$WORK/threads-idle-start.txt" "$WORK/threads-idle-end.txt" | cut -d'|' -f2 | paste -sd, - || true)
WAKE_GROUPS=$(awk -F'|' '{ n = $2; sub(/^sled-io-[0-9]+$/, "sled-io-N", n); c[n]++; v[n] += $3; nv[n] += $4 }
  END { for (n in c) printf "%s|%d|%d|%d\n", n, c[n], v[n], nv[n] }' "$WAKES" | sort -t'|' -k3,3nr)

# ------------------------------------------------------------------------------------------
# Attribution with strace (perturbs a little; not used for the counts above)

STRACE_TABLE=
STRACE_NOTE="not run (BENCH_STRACE_SECS=0 or strace missing)"
if [ "$HAVE_STRACE" = 1 ]; then
  say "== strace attribution window: ${STRACE_SECS} s"
  TRACE=$WORK/strace.txt
  strace -f -tt -p "$DPID" -o "$TRACE" \
    -e trace=epoll_wait,epoll_pwait,futex,nanosleep,clock_nanosleep,fsync,fdatasync 2> "$WORK/strace.err" &
  SPID=$!
  sleep "$STRACE_SECS"
  kill -INT "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  if [ -s "$TRACE" ]; then
    threads > "$WORK/threads-strace.txt"
    # Returned calls: complete lines and `<... resumed>` lines. Per thread: calls returned,
    # fsyncs, median seconds between returns of wait calls.
    STRACE_TABLE=$(awk -v secs="$STRACE_SECS" -v names="$WORK/threads-strace.txt" '
      BEGIN { FS = "|"; while ((getline l < names) > 0) { split(l, f, "|"); comm[f[1]] = f[2] } FS = " " }
      / <unfinished \.\.\.>$/ { next }
      /\+\+\+|---/ { next }
      {
        tid = $1; split($2, hms, ":"); t = hms[1] * 3600 + hms[2] * 60 + hms[3]
        call = $3; if (call == "<...") call = $4; sub(/\(.*/, "", call)
        if (call == "fsync" || call == "fdatasync") { fs[tid]++; next }
        n[tid]++; if (tid in last) { d[tid, ++nd[tid]] = t - last[tid] } last[tid] = t
        calls[tid, call]++
      }
      END {
        for (tid in n) {
          m = nd[tid]; med = "-"
          if (m > 0) {
            for (i = 1; i <= m; i++) a[i] = d[tid, i]
            for (i = 2; i <= m; i++) { x = a[i]; j = i - 1; while (j > 0 && a[j] > x) { a[j + 1] = a[j]; j-- } a[j + 1] = x }
            med = sprintf("%.3f s", a[int((m + 1) / 2)])
          }
          kinds = ""; for (k in calls) { split(k, kk, SUBSEP); if (kk[1] == tid) kinds = kinds (kinds ? ", " : "") kk[2] " " calls[k] }
          nm = (tid in comm) ? comm[tid] : "?"
          printf "| %s (%s) | %d | %.1f | %s | %d | %s |\n", nm, tid, n[tid], n[tid] / secs, med, fs[tid] + 0, kinds
        }
      }' "$TRACE" | sort -t'|' -k4,4nr)
    STRACE_NOTE="strace -f -tt -p PID -e trace=epoll_wait,epoll_pwait,futex,nanosleep,clock_nanosleep,fsync,fdatasync, ${STRACE_SECS} s (raw: strace.txt)"
    [ -n "$STRACE_TABLE" ] || STRACE_TABLE="| (no syscall returned in ${STRACE_SECS} s) | 0 | 0 | - | 0 | |"
  else
    STRACE_NOTE="strace could not attach: $(head -n 1 "$WORK/strace.err" 2>/dev/null)"
  fi
fi

# ------------------------------------------------------------------------------------------
# Stop, report

DAEMON_PID_FOR_REPORT=$DPID
STOP_RC=0
stop_daemon || STOP_RC=$?
tail -n 1 "$LOG" | grep -q ' INFO stopped$' || say "warning: the daemon's log does not end with 'stopped'"

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_TOTAL=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
RUSTC=$(rustc --version 2>/dev/null || echo "rustc ?")
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

{
  echo "Run of $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) CPUs ($CPU_MODEL), $MEM_TOTAL RAM, $RUSTC;"
  echo "release binary, daemon PID $DAEMON_PID_FOR_REPORT, quickstart example with a one-file data/contoso."
  echo "Load average before/after the latency rounds: $LOAD_BEFORE / $LOAD_AFTER (rustc processes at start: $RUSTC_BEFORE)."
  echo "First apply (create both instances, first backup of a 6-byte file): ${FIRST_APPLY_S} s after start."
  echo
  echo "| measure | median | p95 | min | max | n |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  echo "| **save → applied** (\`mv\` over the file → the daemon's \`label and notes updated\` log timestamp) | **$MED ms** | **$P95 ms** | $MIN ms | $MAX ms | $N |"
  echo "| of which save → reconcile start (inotify + 150 ms debounce + re-read and validate) | $RMED ms | $RP95 ms | $RMIN ms | $RMAX ms | $N |"
  echo "| of which reconcile start → applied (plan + sled write and flush) | $AMED ms | $AP95 ms | $AMIN ms | $AMAX ms | $N |"
  echo "| save → label visible to a client polling \`backplan backups --json\` every ~10 ms (mean $CPOLLS polls) | $CMED ms | $CP95 ms | $CMIN ms | $CMAX ms | $CN |"
  echo "| the \`mv\` itself (fork+exec+rename+exit; counted above, from its start) | $MVMED ms | | | $MVMAX ms | $N |"
  echo
  echo "| idle (${IDLE} s, after ${SETTLE} s settling) | value |"
  echo "| --- | ---: |"
  echo "| VmRSS at the end | **$(mib "$RSS")** (anon $(mib "$ANON"), file-backed $(mib "$FILE")) |"
  echo "| VmHWM (peak since start) | $(mib "$HWM") (already $(mib "$HWM_AFTER_FIRST") right after the first apply) |"
  echo "| CPU time used in ${IDLE} s (utime+stime) | $CPU_S s |"
  echo "| threads | $NTHREADS |"
  echo "| context switches in ${IDLE} s, all threads (voluntary + nonvoluntary) | **$TOTAL_WAKES** |"
  echo "| log lines written while idle | $((LOG_LINES1 - LOG_LINES0)) |"
  echo "| threads that exited while settling | ${EXITED_SETTLE:-none} |"
  echo "| threads that appeared / exited during the window | ${NEW:-none} / ${GONE:-none} |"
  echo
  echo "Idle wake-ups per thread group (from /proc/PID/task/*/status, ${IDLE} s):"
  echo
  echo "| thread | threads | voluntary | nonvoluntary | per second |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  printf '%s\n' "$WAKE_GROUPS" | awk -F'|' -v secs="$IDLE" 'NF { printf "| %s | %d | %d | %d | %.1f |\n", $1, $2, $3, $4, ($3 + $4) / secs }'
  echo
  echo "Attribution: $STRACE_NOTE"
  if [ -n "$STRACE_TABLE" ]; then
    echo
    echo "| thread (tid) | wait calls returned | per second | median interval | fsync/fdatasync | calls |"
    echo "| --- | ---: | ---: | ---: | ---: | --- |"
    printf '%s\n' "$STRACE_TABLE"
  fi
  echo
  echo "Daemon stopped with SIGTERM: exit status $STOP_RC."
} > "$WORK/report.md"

cat "$WORK/report.md"
say ""
say "report: $WORK/report.md; raw: $SAMPLES, $CLI_SAMPLES, $WAKES, $LOG"

# Shared helpers of the benchmark scripts that time backplan beside restic
# (benches/engine-vs-restic.sh, benches/storage-vs-restic.sh). Sourced, not run:
#
#   source "$ROOT/benches/lib.sh"
#
# The caller sets WORK (its work folder), LOGS and RESULTS (a TSV file) before calling `timed`.
# Results are one line per timed command: STEP TOOL wall-seconds peak-KiB cpu-seconds.

say() { printf '%s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# work_dir DIR MARKER: makes DIR (refusing a non-empty one this script did not make), prints
# its absolute path.
work_dir() {
  if [ -e "$1" ] && [ -n "$(ls -A "$1" 2>/dev/null)" ] && [ ! -e "$1/$2" ]; then
    die "$1 exists, is not empty and was not made by this script; pick another WORKDIR"
  fi
  mkdir -p "$1"
  touch "$1/$2"
  (cd "$1" && pwd)
}

# build_backplan: builds the binary and sets BP to it. BENCH_BUILD=0 uses the one already
# built; BENCH_PROFILE (default release) names the cargo profile, e.g. `dev` with
# CARGO_PROFILE_DEV_OPT_LEVEL=2 on a machine where a release build of the dependencies is too
# slow (say which one you measured).
build_backplan() {
  local profile=${BENCH_PROFILE:-release} dir
  if [ "${BENCH_BUILD:-1}" != 0 ]; then
    say "== building backplan (cargo build --profile $profile --locked)"
    (cd "$ROOT" && cargo build --profile "$profile" --locked --quiet --bin backplan)
  fi
  TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
  dir=$profile
  [ "$profile" = dev ] && dir=debug
  BP=$TARGET_DIR/$dir/backplan
  [ -x "$BP" ] || die "no binary at $BP"
  BUILD_NOTE="cargo profile $profile$([ "$profile" = dev ] && printf ' (opt-level %s)' "${CARGO_PROFILE_DEV_OPT_LEVEL:-0 for backplan}")"
}

# Page caches: dropped before every "cold" step when allowed (root outside a restricted
# container) and BENCH_DROP_CACHES is not 0. Sets DROP and CACHE_NOTE.
caches_init() {
  DROP=${BENCH_DROP_CACHES:-1}
  if [ "$DROP" = 1 ]; then
    if sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
      CACHE_NOTE="page caches dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every timed step, except the warm re-backups"
    else
      DROP=0
      CACHE_NOTE="page caches could not be dropped (no permission): caches were warm for both tools alike"
    fi
  else
    CACHE_NOTE="page caches kept warm (BENCH_DROP_CACHES=0), for both tools alike"
  fi
}

drop_caches() {
  sync
  if [ "${DROP:-0}" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# timed STEP TOOL CACHE CMD...: runs CMD under GNU time (its output to LOGS/STEP-TOOL.log),
# appends "STEP TOOL secs kib cpu" to RESULTS (cpu: user + sys seconds). CACHE: cold (drop the
# page caches first), warm (sync first), asis (nothing first).
timed() {
  local step=$1 tool=$2 cache=$3
  shift 3
  local log=$LOGS/$step-$tool.log tf=$WORK/time.out
  case $cache in
    cold) drop_caches ;;
    warm) sync ;;
    asis) ;;
  esac
  if ! /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >>"$log" 2>&1; then
    say "error: $tool, step $step failed: $*"
    tail -n 30 "$log" >&2
    exit 1
  fi
  local secs kib usr sys cpu
  read -r secs kib usr sys < <(tail -n 1 "$tf")
  cpu=$(awk -v u="$usr" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
  printf '%s\t%s\t%s\t%s\t%s\n' "$step" "$tool" "$secs" "$kib" "$cpu" >>"$RESULTS"
  say "   $(printf '%-22s %-14s %7s s %7s s CPU %7s MiB' "$step" "$tool" "$secs" "$cpu" "$((kib / 1024))")"
}

# val STEP TOOL FIELD (3 wall s, 4 peak KiB, 5 CPU s): that field of the quietest run (least
# wall time).
val() {
  awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $2 == t' "$RESULTS" | sort -t"$(printf '\t')" -k3,3n |
    head -n 1 | cut -f"$3"
}
# spread STEP TOOL: "min-max" wall seconds, or the single value.
spread() {
  awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $2 == t {print $3}' "$RESULTS" | sort -n |
    awk '{a[NR]=$1} END {if (NR > 1 && a[1] != a[NR]) printf "%s-%s", a[1], a[NR]; else printf "%s", a[1]}'
}
# runs STEP TOOL: every run, in order: "W s (C CPU, P MiB)".
runs() {
  awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $2 == t {printf "%s%s s (%s CPU, %.0f MiB)", sep, $3, $5, $4 / 1024; sep=", "}' "$RESULTS"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
hr() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

# machine_lines: the report's lines on the run's date, commit, build and machine.
machine_lines() {
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); backplan $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'); ${BUILD_NOTE:-}"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM"
  echo "- $(rustc --version); $(restic version | head -n 1)"
}

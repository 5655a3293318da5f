#!/usr/bin/env bash
# The daemon's memory (VmRSS) through label edits, `status` and `backplan plan`, on the host
# that benches/daemon-scale.sh wrote (1,000 instances, 100,000 backups):
#
#   bash benches/daemon-scale.sh /tmp/backplan-scale-bench     # writes .../host and .../template.toml
#   BACKPLAN=target/debug/backplan bash benches/daemon-memory.sh /tmp/backplan-scale-bench
#
# Prints VmRSS after start, after each of 10 label edits (once its snapshot tags are
# rewritten), after 3 `status`, after each of 3 `backplan plan` (CLI wall and peak RSS beside),
# and, when gdb is installed, after `malloc_trim(0)` (what of it is freed heap glibc kept).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-/tmp/backplan-scale-bench}
BIN=${BACKPLAN:-$ROOT/target/debug/backplan}
H=$WORK/host
LOG=$WORK/memory-daemon.log
[ -f "$WORK/template.toml" ] || { echo "run benches/daemon-scale.sh $WORK first" >&2; exit 1; }
cp "$WORK/template.toml" "$H/backplan.toml"
(cd "$H" && exec env -u NOTIFY_SOCKET RUST_LOG=info NO_COLOR=1 "$BIN" run -c "$H/backplan.toml" --log-format human 2> "$LOG") &
P=$!
trap 'kill $P 2>/dev/null || true' EXIT
until tail -n 1 "$LOG" | grep -q "nothing to do$"; do sleep 0.2; done
rss() { echo "$1 $(awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$P/status") MiB"; }
rss start
for i in $(seq 1 10); do
  sed "s/label = \"Before change CR-500-5\"/label = \"Edit $i\"/" "$WORK/template.toml" > "$H/b.new"
  mv "$H/b.new" "$H/backplan.toml"
  until [ "$(grep -c 'snapshot tags rewritten' "$LOG")" -ge "$i" ]; do sleep 0.1; done
  sleep 1.5
  rss "edit $i"
done
for _ in 1 2 3; do "$BIN" status -c "$H/backplan.toml" > /dev/null 2>&1; done
sleep 1; rss "3 status"
for i in 1 2 3; do
  /usr/bin/time -f "plan $i: CLI %e s, peak %M KiB" "$BIN" plan -c "$H/backplan.toml" > /dev/null
  sleep 1; rss "plan $i"
done
if command -v gdb > /dev/null; then
  gdb -p "$P" -batch -ex "call (int) malloc_trim(0)" > /dev/null 2>&1 || true
  sleep 1; rss "after malloc_trim"
fi

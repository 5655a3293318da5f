#!/usr/bin/env bash
# External storage benchmark: backup and restore throughput of `backplan apply` to the local
# repository, to Azure Blob (Azurite) and to S3 (moto), next to the stock restic writing to the
# same moto (restic's S3 backend), on the same generated data, in one run.
#
#   bash benches/storage-vs-restic.sh [WORKDIR]       (default WORKDIR: /tmp/backplan-storage-bench)
#
# Needs: a Rust toolchain, restic, python3, curl, GNU time at /usr/bin/time, and the two
# emulators running (scripts/install-test-deps.sh starts them and writes their endpoints to
# target/test-emulators/{azurite,s3}/endpoint; BACKPLAN_TEST_AZURITE / BACKPLAN_TEST_S3 point
# elsewhere). Everything it writes stays in WORKDIR and in buckets / containers of its own
# (named bench-<time>-<round>; the emulators keep them in memory).
#
# Each round (BENCH_ROUNDS, default 3) uses fresh repositories everywhere: for every target, a
# timed backup of the dataset, then a timed restore of that backup into an empty folder. The
# report gives, per target and step, the quietest round (least wall time) with its CPU seconds
# (user + sys, of the client process: the emulators' own CPU is not counted), the spread of
# wall times, and the throughput (dataset size / wall time). Targets alternate within a round
# so that load from other work on the machine falls on all of them alike.
#
# Environment: BENCH_MIB (dataset size, default 200), BENCH_ROUNDS (default 3); BENCH_BUILD and
# BENCH_PROFILE as in benches/lib.sh (its timing and report helpers).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARG=${1:-}
MIB=${BENCH_MIB:-200}
ROUNDS=${BENCH_ROUNDS:-3}
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

for tool in cargo python3 restic curl; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is missing: apt-get install time"

endpoint() { # NAME VAR
  local url=${!2:-}
  if [ -z "$url" ] && [ -f "$ROOT/target/test-emulators/$1/endpoint" ]; then
    url=$(cat "$ROOT/target/test-emulators/$1/endpoint")
  fi
  url=${url%/}
  [ -n "$url" ] && curl -s -o /dev/null --max-time 5 "$url" ||
    die "the $1 emulator is not running: run scripts/install-test-deps.sh (or set $2)"
  printf '%s' "$url"
}
AZ=$(endpoint azurite BACKPLAN_TEST_AZURITE)
S3=$(endpoint s3 BACKPLAN_TEST_S3)
AZ_ACCOUNT=devstoreaccount1
# Azurite's well-known development key (public, documented by Microsoft).
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

WORK=$(work_dir "${ARG:-/tmp/backplan-storage-bench}" .backplan-storage-bench)
build_backplan

DATA=$WORK/data
LOGS=$WORK/logs
RESULTS=$WORK/results.tsv
rm -rf "$DATA" "$LOGS" "$RESULTS" "$WORK"/round* "$WORK/report.md"
mkdir -p "$LOGS"
: >"$RESULTS"

# ------------------------------------------------------------------------------------------
# Dataset: deterministic. Half SQL-like dumps of 4 MiB (compressible), a quarter small files
# of 1-16 KiB, a quarter incompressible blobs of 8 MiB.

say "== generating $MIB MiB in $DATA"
python3 - "$DATA" "$MIB" <<'PY'
import os, random, sys
root, mib = sys.argv[1], int(sys.argv[2])
MiB = 1 << 20
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
         "november oscar papa quebec romeo sierra tango invoice customer order payment").split()
r = random.Random(1)
os.makedirs(f"{root}/sql"); os.makedirs(f"{root}/small"); os.makedirs(f"{root}/random")
for i in range(max(1, mib // 2 // 4)):
    lines, n = [], 0
    while n < 4 * MiB:
        l = (f"INSERT INTO t VALUES ({n}, '{r.choice(WORDS)} {r.choice(WORDS)}', "
             f"{r.randint(0, 10**7) / 100:.2f}, '{' '.join(r.choice(WORDS) for _ in range(r.randint(3, 12)))}');\n")
        lines.append(l); n += len(l)
    open(f"{root}/sql/dump_{i:03d}.sql", "w").write("".join(lines)[:4 * MiB])
left, j = mib // 4 * MiB, 0
while left > 0:
    d = f"{root}/small/d{j // 100:03d}"
    os.makedirs(d, exist_ok=True)
    size = r.randint(1024, 16 * 1024)
    open(f"{d}/f{j:05d}", "wb").write(r.randbytes(size) if j % 3 == 0 else
        (" ".join(r.choice(WORDS) for _ in range(size // 6)) + "\n").encode()[:size])
    left -= size; j += 1
for i in range(max(1, mib // 4 // 8)):
    open(f"{root}/random/blob_{i:02d}.bin", "wb").write(r.randbytes(8 * MiB))
PY
DATA_BYTES=$(du -sb "$DATA" | cut -f1)
DATA_FILES=$(find "$DATA" -type f | wc -l)

# ------------------------------------------------------------------------------------------
# Helpers

# timed, val, spread: benches/lib.sh (every step here runs with warm page caches, after a sync).

create_bucket() { curl -sf -X PUT "$S3/$1" >/dev/null || die "cannot create bucket $1"; }
create_container() { # Shared Key signature, as the Azure Blob service wants it
  python3 - "$AZ" "$AZ_ACCOUNT" "$AZ_KEY" "$1" <<'PY'
import base64, hmac, hashlib, http.client, sys, urllib.parse
from email.utils import formatdate
endpoint, account, key, name = sys.argv[1:]
date, version = formatdate(usegmt=True), "2021-08-06"
resource = f"/{account}/{account}/{name}\nrestype:container"
to_sign = f"PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
base = endpoint[: -len("/" + account)] if endpoint.endswith("/" + account) else endpoint
u = urllib.parse.urlsplit(base)
c = http.client.HTTPConnection(u.hostname, u.port)
c.request("PUT", f"/{account}/{name}?restype=container", body=b"",
    headers={"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}"})
r = c.getresponse()
assert r.status == 201, (r.status, r.read())
PY
}

# write_config DIR STORAGE_TOML BACKUP_STORAGE_LINE
write_config() {
  mkdir -p "$1/sandbox"
  cat >"$1/backplan.toml" <<EOF
# Written by benches/storage-vs-restic.sh.
[daemon]
state_dir = "state"

[schedule]
daily_at = "00:00"
timezone = "UTC"

[instances.bench]
type = "production"
version = "1"
source = { kind = "directory", path = "$DATA" }

[instances.sandbox]
type = "sandbox"
version = "1"
source = { kind = "directory", path = "$1/sandbox" }
$2
EOF
}

# bp_target ROUND TARGET STORAGE_TOML STORAGE_NAME: backup then restore through backplan.
bp_target() {
  local dir=$WORK/round$1/$2
  mkdir -p "$dir"
  printf 'benchmark repository password %s\n' "$2" >"$dir/repo.key"
  printf '%s\n' "$AZ_KEY" >"$dir/az.key"
  printf 'testing-secret\n' >"$dir/s3.secret"
  chmod 600 "$dir"/*.key "$dir/s3.secret"
  write_config "$dir" "$3"
  "$BP" apply -c "$dir/backplan.toml" --auto-approve >>"$LOGS/setup-$2.log" 2>&1 ||
    die "setting up $2 failed (see $LOGS/setup-$2.log)"
  if [ "$4" = local ]; then
    printf '\n[instances.bench.backups.b1]\nlabel = "bench"\n' >>"$dir/backplan.toml"
  else
    printf '\n[instances.bench.backups.b1]\nlabel = "bench"\nstorage = "%s"\n' "$4" >>"$dir/backplan.toml"
  fi
  timed backup "$2" warm "$BP" apply -c "$dir/backplan.toml" --auto-approve
  printf '\n[restores.r1]\nfrom = "bench/b1"\nto = "sandbox"\n' >>"$dir/backplan.toml"
  timed restore "$2" warm "$BP" apply -c "$dir/backplan.toml" --auto-approve
}

# ------------------------------------------------------------------------------------------
# The run

LOAD_BEFORE=$(load_avg)
STAMP=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
  say "== round $round of $ROUNDS"
  rm -rf "$WORK/round$round"
  name=bench-$STAMP-$round
  create_bucket "$name-bp"
  create_bucket "$name-restic"
  create_container "$name"

  bp_target "$round" backplan-local "" local
  bp_target "$round" backplan-azure "[storage.az]
kind = \"azure\"
account = \"$AZ_ACCOUNT\"
container = \"$name\"
path = \"repo\"
endpoint = \"$AZ\"
access_key_file = \"az.key\"
password_file = \"repo.key\"" az
  bp_target "$round" backplan-s3 "[storage.s3]
kind = \"s3\"
bucket = \"$name-bp\"
path = \"repo\"
region = \"us-east-1\"
endpoint = \"$S3\"
access_key_id = \"testing\"
secret_access_key_file = \"s3.secret\"
password_file = \"repo.key\"" s3

  rdir=$WORK/round$round/restic-s3
  mkdir -p "$rdir"
  printf 'benchmark repository password restic\n' >"$rdir/repo.key"
  (
    export RESTIC_REPOSITORY=s3:$S3/$name-restic/repo RESTIC_PASSWORD_FILE=$rdir/repo.key
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing-secret AWS_DEFAULT_REGION=us-east-1
    restic --no-cache init >>"$LOGS/setup-restic-s3.log" 2>&1
    timed backup restic-s3 warm restic --no-cache backup "$DATA"
    mkdir -p "$rdir/restore"
    timed restore restic-s3 warm restic --no-cache restore latest --target "$rdir/restore"
  )
  if [ "$round" = "$ROUNDS" ]; then
    for t in backplan-local backplan-azure backplan-s3; do
      diff -r "$DATA" "$WORK/round$round/$t/sandbox" >"$LOGS/verify-$t.log" 2>&1 ||
        die "$t: the restored tree differs (see $LOGS/verify-$t.log)"
    done
    diff -r "$DATA" "$rdir/restore$DATA" >"$LOGS/verify-restic-s3.log" 2>&1 ||
      die "restic-s3: the restored tree differs"
  fi
  [ "$round" = "$ROUNDS" ] || rm -rf "$WORK/round$round"
done
LOAD_AFTER=$(load_avg)

# ------------------------------------------------------------------------------------------
# Report

rate() { awk -v b="$DATA_BYTES" -v s="$1" 'BEGIN {printf "%.1f", b / 1048576 / s}'; }
row() { # STEP TARGET
  local s
  s=$(val "$1" "$2" 3)
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$s" "$(rate "$s")" \
    "$(val "$1" "$2" 5)" "$(spread "$1" "$2")" "$(($(val "$1" "$2" 4) / 1024))"
}

REPORT=$WORK/report.md
{
  echo "Command: \`bash benches/storage-vs-restic.sh${ARG:+ $ARG}\` (BENCH_MIB=$MIB, BENCH_ROUNDS=$ROUNDS)"
  echo
  machine_lines
  echo "- emulators on loopback: Azurite $AZ, moto $S3 (both keep their data in memory)"
  echo "- dataset: $(awk -v b="$DATA_BYTES" 'BEGIN {printf "%.1f MiB", b / 1048576}'), $DATA_FILES files (SQL-like dumps, small files, incompressible blobs)"
  echo "- load average (1/5/15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER"
  echo
  echo "Quietest of $ROUNDS rounds (fresh repositories each); CPU = user + sys seconds of the client of that round; MiB/s = dataset / wall."
  echo
  echo "| step | target | wall s | MiB/s | CPU s | spread of wall s | peak RSS MiB |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  for step in backup restore; do
    for t in backplan-local backplan-azure backplan-s3 restic-s3; do
      row "$step" "$t"
    done
  done
  echo
  echo "backplan's restore includes the pre-restore safety backup of the empty sandbox (to the local repository), the staging folder, syncfs and the swap; restic's restore does not sync."
} >"$REPORT"
echo
cat "$REPORT"
say "report: $REPORT; logs: $LOGS; raw figures: $RESULTS"

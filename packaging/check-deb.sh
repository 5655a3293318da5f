#!/usr/bin/env bash
# Builds the Debian package (from the binary the tests built; pass --release to build one),
# installs it with dpkg -i, checks the unit with systemd-analyze verify and the files where
# the README promises them, then removes and purges it and checks that /var/lib/backplan (state,
# repositories, keys) survives both. Needs root (or sudo); CI runs it after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
fail() { echo "check-deb: FAILED: $*" >&2; exit 1; }
step() { echo "check-deb: $(date +%T) $*"; }

if dpkg-query -W -f='${Status}' backplan 2>/dev/null | grep -q installed; then
  fail "backplan is already installed here; this check installs and purges it"
fi
[ ! -e /etc/backplan/backplan.toml ] || fail "/etc/backplan/backplan.toml exists here; this check makes and deletes one"
command -v systemd-analyze >/dev/null || {
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq systemd
}

# Left as found: the state folder and the group are removed at the end only if this script
# made them (on a real host the package never removes them).
had_state=false; [ -e /var/lib/backplan ] && had_state=true
had_group=false; getent group backplan >/dev/null && had_group=true
had_etc=false; [ -e /etc/backplan ] && had_etc=true
marker=/var/lib/backplan/check-deb-marker
work=$(mktemp -d) daemon=""
cleanup() {
  [ -z "$daemon" ] || $sudo kill "$daemon" 2>/dev/null || true
  $sudo userdel backplan-check-member 2>/dev/null || true
  $sudo userdel backplan-check-other 2>/dev/null || true
  $sudo rm -rf "$work" /etc/backplan/check-deb.toml /etc/backplan/backplan.toml /run/backplan/backplan.sock
  $sudo rmdir /run/backplan 2>/dev/null || true
  $sudo dpkg -P backplan >/dev/null 2>&1 || true
  $sudo rm -f "$marker"
  $had_state || $sudo rmdir /var/lib/backplan 2>/dev/null || true
  $had_etc || $sudo rmdir /etc/backplan 2>/dev/null || true
  $had_group || $sudo groupdel backplan 2>/dev/null || true
}
trap cleanup EXIT

step build
deb=$(packaging/build-deb.sh "$@")
echo "check-deb: built $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
step install
$sudo dpkg -i "$deb"
step check files

for f in /usr/bin/backplan /usr/lib/systemd/system/backplan.service \
  /etc/backplan/backplan.toml.example /usr/share/doc/backplan/README.md \
  /usr/share/doc/backplan/copyright /usr/share/doc/backplan/examples/backplan-paths.conf.example \
  /usr/share/bash-completion/completions/backplan /usr/share/zsh/vendor-completions/_backplan \
  /usr/share/fish/vendor_completions.d/backplan.fish /usr/share/man/man1/backplan.1.gz; do
  [ -s "$f" ] || fail "$f is missing or empty"
done
for cmd in validate plan apply run status backups show verify completions man; do
  [ -s "/usr/share/man/man1/backplan-$cmd.1.gz" ] || fail "no man page for backplan $cmd"
done
/usr/bin/backplan --version
bash -n /usr/share/bash-completion/completions/backplan || fail "bash completion does not parse"
grep -q '^ExecStart=/usr/bin/backplan run' /usr/lib/systemd/system/backplan.service \
  || fail "the unit does not start /usr/bin/backplan"
grep -q '^ConditionPathExists=/etc/backplan/backplan.toml$' /usr/lib/systemd/system/backplan.service \
  || fail "the unit would start without a configuration"
for line in Group=backplan Nice=10 CPUWeight=20 IOWeight=20 IOSchedulingClass=best-effort \
  IOSchedulingPriority=7 StateDirectoryMode=0700 RuntimeDirectoryMode=0750; do
  grep -qx "$line" /usr/lib/systemd/system/backplan.service || fail "the unit lacks $line"
done
SYSTEMD_LOG_LEVEL=notice systemd-analyze verify /usr/lib/systemd/system/backplan.service
[ -e /etc/systemd/system/multi-user.target.wants/backplan.service ] && fail "the package enabled the service"
dpkg -L backplan | grep -qx /etc/backplan/backplan.toml && fail "the package owns /etc/backplan/backplan.toml"
getent group backplan >/dev/null || fail "no backplan group"
[ "$(stat -c '%a %U %G' /var/lib/backplan)" = "700 root root" ] || fail "/var/lib/backplan is $(stat -c '%a %U %G' /var/lib/backplan)"
[ "$(stat -c '%a %U %G' /etc/backplan)" = "750 root backplan" ] || fail "/etc/backplan is $(stat -c '%a %U %G' /etc/backplan)"
dpkg -L backplan | grep -q '^/var/lib/backplan' && fail "dpkg owns /var/lib/backplan (it could delete it)"
/usr/bin/backplan validate -c /etc/backplan/backplan.toml.example || fail "the example file is invalid"
if command -v man >/dev/null; then
  [ "$(man -w backplan)" = /usr/share/man/man1/backplan.1.gz ] || fail "man does not find backplan(1)"
fi

step check the group
# Group backplan: its members use the CLI against the daemon, others cannot. The daemon runs
# as the unit runs it (root, group backplan, /run/backplan 0750 as RuntimeDirectory= makes
# it), on a state folder only root can read: an answer can only come from the daemon.
$sudo install -d -m 0750 -g backplan /run/backplan
mkdir -p "$work/www" && echo hello > "$work/www/index.html"
$sudo tee /etc/backplan/check-deb.toml >/dev/null <<TOML
[daemon]
state_dir = "$work/state"
control_socket = "/run/backplan/backplan.sock"
[schedule]
daily_at = "02:00"
timezone = "UTC"
[instances.www]
type = "production"
version = "1.0"
source = { kind = "directory", path = "$work/www" }
TOML
$sudo chgrp backplan /etc/backplan/check-deb.toml && $sudo chmod 0640 /etc/backplan/check-deb.toml
$sudo setpriv --regid=backplan --clear-groups -- /usr/bin/backplan run -c /etc/backplan/check-deb.toml \
  > "$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -S /run/backplan/backplan.sock ] && break; sleep 0.2; done
[ -S /run/backplan/backplan.sock ] || { cat "$work/daemon.log"; fail "the daemon did not bind its socket"; }
[ "$(stat -c '%a %G' /run/backplan/backplan.sock)" = "660 backplan" ] \
  || fail "the socket is $(stat -c '%a %G' /run/backplan/backplan.sock)"
$sudo useradd --system --no-create-home --no-user-group --groups backplan backplan-check-member
$sudo useradd --system --no-create-home --no-user-group backplan-check-other
$sudo runuser -u backplan-check-member -- /usr/bin/backplan status -c /etc/backplan/check-deb.toml \
  || fail "a member of group backplan cannot use the CLI against the daemon"
if $sudo runuser -u backplan-check-other -- /usr/bin/backplan status -c /etc/backplan/check-deb.toml 2>/dev/null; then
  fail "a user outside group backplan used the daemon"
fi
$sudo kill "$daemon" && wait "$daemon" || true
daemon=""
$sudo rm -f /etc/backplan/check-deb.toml

step upgrade
# An upgrade (here: the same version again) keeps the modes and the operator's file.
$sudo cp /etc/backplan/backplan.toml.example /etc/backplan/backplan.toml
$sudo dpkg -i "$deb" >/dev/null
[ "$(stat -c '%a %U %G' /etc/backplan)" = "750 root backplan" ] || fail "after an upgrade /etc/backplan is $(stat -c '%a %U %G' /etc/backplan)"

# What a repository key would be: it must outlive remove and purge, as must the operator's file.
echo key | $sudo tee "$marker" >/dev/null
step remove
$sudo dpkg -r backplan
[ ! -e /usr/bin/backplan ] || fail "remove left /usr/bin/backplan"
[ -f "$marker" ] || fail "remove deleted /var/lib/backplan"
[ -e /etc/backplan/backplan.toml.example ] || fail "remove deleted a conffile (only purge may)"
step purge
$sudo dpkg -P backplan
[ -f "$marker" ] || fail "purge deleted /var/lib/backplan"
[ ! -e /etc/backplan/backplan.toml.example ] || fail "purge left the example file"
[ -f /etc/backplan/backplan.toml ] || fail "purge deleted the operator's /etc/backplan/backplan.toml"
echo "check-deb: installed, verified, removed and purged; /var/lib/backplan kept"

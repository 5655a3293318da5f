#!/usr/bin/env bash
# Checks systemd/backplan.service with `systemd-analyze verify`, against the binary just built
# (verify insists that ExecStart= exists). Installs Debian's systemd package if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq systemd
fi
bin="${1:-$PWD/target/debug/backplan}"
[ -x "$bin" ] || cargo build --locked
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/backplan|$bin|" systemd/backplan.service > "$tmp/backplan.service"
SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$tmp/backplan.service"
echo "systemd/backplan.service: verified"

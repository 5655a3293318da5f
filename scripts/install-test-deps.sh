#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, when it is missing:
# - restic: the interoperability tests read backplan's repositories with the real restic;
# - strace: a test observes that repository folders are synced after a backup.
set -euo pipefail
need=()
command -v restic >/dev/null || need+=(restic)
command -v strace >/dev/null || need+=(strace)
command -v setpriv >/dev/null || need+=(util-linux)
command -v sqlite3 >/dev/null || need+=(sqlite3)  # the SQLite tests drive other processes with the shell
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}"
fi

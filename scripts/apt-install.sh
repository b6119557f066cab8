#!/usr/bin/env bash
# Installs the Debian packages named (the caller names only the missing ones), without
# recommends; refuses, naming them, unless run as root. No names: nothing to do.
set -euo pipefail

[ $# -gt 0 ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
  printf '[apt-install] missing %s; run as root or install them yourself\n' "$*" >&2
  exit 1
fi
printf '[apt-install] apt-get install %s\n' "$*"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null

#!/usr/bin/env bash
# Installs what the compose tests (tests/compose/) need on the machine: dockerd and a
# docker CLI (Debian's docker.io; its 20.10 client also builds with BuildKit without the
# buildx plugin), debootstrap and binutils for the stand-in base images, iproute2 to put
# the network back. Compose v2 itself and hadolint come from PyPI (requirements-test.lock).
# Idempotent; installing starts no dockerd (the tests start one and stop it).
set -euo pipefail

say() { printf '[install-docker] %s\n' "$*"; }

need=()
[ -x /usr/sbin/dockerd ] || command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v strip >/dev/null || need+=(binutils)
command -v ip >/dev/null || need+=(iproute2)
"$(dirname "$0")/apt-install.sh" "${need[@]}"
say "ready"

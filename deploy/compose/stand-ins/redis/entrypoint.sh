#!/bin/sh
# As the upstream image's entrypoint does: with no config file, redis-server would accept
# only loopback clients (protected mode), so it is turned off for the compose network.
set -eu
if [ "${1:-}" = "redis-server" ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"

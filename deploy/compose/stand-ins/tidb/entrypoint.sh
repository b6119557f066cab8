#!/bin/sh
# Takes tidb-server's arguments; only --path (the data directory) means anything here.
set -eu
datadir=/var/lib/tidb
for arg in "$@"; do
  case $arg in --path=*) datadir=${arg#--path=} ;; esac
done
sock=/run/mysqld.sock
if [ ! -d "$datadir/mysql" ]; then
  mariadb-install-db --no-defaults --datadir="$datadir" --user=root \
    --auth-root-authentication-method=normal --skip-test-db >/dev/null
fi
mariadbd --no-defaults --datadir="$datadir" --socket="$sock" --port=4000 \
  --bind-address=0.0.0.0 --user=root --skip-log-bin --skip-name-resolve \
  --innodb-buffer-pool-size=64M &
pid=$!
trap 'kill -TERM "$pid"; wait "$pid"; exit 0' TERM INT
until mariadb-admin --no-defaults --socket="$sock" -uroot ping >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || exit 1
  sleep 0.2
done
# TiDB's first start: root without a password from anywhere, and a `test` database.
mariadb --no-defaults --socket="$sock" -uroot -e "
  CREATE DATABASE IF NOT EXISTS test;
  CREATE USER IF NOT EXISTS 'root'@'%';
  GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
mkdir -p /run/status
echo '{"connections":0,"version":"mariadb stand-in","git_hash":""}' > /run/status/status
busybox httpd -p 10080 -h /run/status
wait "$pid"

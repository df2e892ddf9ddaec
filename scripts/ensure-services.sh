#!/usr/bin/env bash
# Make sure the services the tests talk to are up: MariaDB on 127.0.0.1:3306 (root, no
# password). Installs Debian's mariadb-server when it is missing, starts it when stopped.
set -euo pipefail

# Spark needs a JVM (17); Debian's headless JRE when none is installed.
if ! command -v java >/dev/null 2>&1; then
  echo "installing a Java runtime for Spark..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi

mariadb_up() {
  if command -v mariadb-admin >/dev/null 2>&1; then
    mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u root status >/dev/null 2>&1
  elif command -v mysqladmin >/dev/null 2>&1; then
    mysqladmin --protocol=tcp -h 127.0.0.1 -P 3306 -u root status >/dev/null 2>&1
  else
    return 1
  fi
}

if mariadb_up; then
  exit 0
fi
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  echo "installing mariadb-server..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq mariadb-server >/dev/null
fi
echo "starting MariaDB..." >&2
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql \
  || (/usr/sbin/mariadbd --user=mysql >/tmp/mariadbd.log 2>&1 &)
for _ in $(seq 1 60); do
  if mariadb_up; then
    exit 0
  fi
  sleep 1
done
echo "MariaDB did not come up on 127.0.0.1:3306" >&2
exit 1

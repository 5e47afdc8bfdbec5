#!/usr/bin/env bash
# The entrypoint of localhost/atproto-video-postgres: the official postgres image's interface,
# reduced to what the chart uses. On an empty PGDATA: initdb as POSTGRES_USER with
# POSTGRES_PASSWORD (scram-sha-256 for every TCP connection, trust only on the unix socket
# inside the container), then POSTGRES_DB is created on a socket-only temporary server. Then
# postgres runs in the foreground (exec: it gets the signals) on PGPORT (default 5432).
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u +'%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# `docker run IMAGE -c x=y` means `postgres -c x=y`, as with the official image.
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi

if [ "${1:-}" = postgres ]; then
  [ "$(id -u)" != 0 ] || die "run this image as uid 999 (runAsUser: 999), not root"
  : "${PGDATA:=/var/lib/postgresql/data}"
  : "${POSTGRES_USER:=postgres}"
  : "${POSTGRES_DB:=$POSTGRES_USER}"
  export PGDATA PGPORT="${PGPORT:-5432}"
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA" 2>/dev/null || :
  mkdir -p /var/run/postgresql 2>/dev/null || :

  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -n "${POSTGRES_PASSWORD:-}" ] || die "database is uninitialized and POSTGRES_PASSWORD is not set"
    [ -z "$(ls -A "$PGDATA")" ] || die "PGDATA $PGDATA is not empty and holds no database (PG_VERSION missing)"
    log "initdb in $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
      --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >&2
    # initdb's pg_hba.conf covers loopback only; the official image adds every address.
    printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
      # A socket-only temporary server (nothing can connect over TCP while it runs).
      pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -p $PGPORT" start >&2
      psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
        --set db="$POSTGRES_DB" >&2 <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') \gexec
SQL
      pg_ctl -D "$PGDATA" -m fast -w stop >&2
    fi
    log "initialized; starting postgres"
  fi
fi

exec "$@"

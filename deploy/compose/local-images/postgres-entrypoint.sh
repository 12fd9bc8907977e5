#!/bin/bash
# First start: create the cluster with POSTGRES_USER as its superuser, let clients in over the
# network with POSTGRES_HOST_AUTH_METHOD (with POSTGRES_PASSWORD unless that is trust), run
# /docker-entrypoint-initdb.d/*.sql against POSTGRES_DB on a server no client can reach yet.
# Then run the server in the foreground.
set -euo pipefail
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
method=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s' "${POSTGRES_PASSWORD:-}" >"$password_file"
    if [ "$method" != trust ] && [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "POSTGRES_PASSWORD is required unless POSTGRES_HOST_AUTH_METHOD=trust" >&2
        exit 1
    fi
    initdb -D "$PGDATA" -U "$user" -E UTF8 --locale=C.UTF-8 --auth-local=trust \
        --auth-host="$method" ${POSTGRES_PASSWORD:+--pwfile="$password_file"}
    rm -f "$password_file"
    echo "host all all all $method" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start
    if [ "$database" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -c "CREATE DATABASE \"$database\""
    fi
    for script in /docker-entrypoint-initdb.d/*.sql; do
        [ -f "$script" ] && psql -v ON_ERROR_STOP=1 -U "$user" -d "$database" -f "$script"
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec postgres -D "$PGDATA"

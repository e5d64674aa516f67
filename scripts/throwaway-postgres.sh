# A throwaway PostgreSQL for the test suite. Source this file, then call
# `throwaway_postgres_start`; it exports HYPERGATE_TEST_DATABASE_URL (a
# superuser URL; each test creates and drops its own database) and registers
# a trap that stops the server and deletes its files when the shell exits.
#
# The server runs as a non-root user (initdb and postgres refuse root): the
# `postgres` system user when we are root, created if missing; ourselves
# otherwise. It listens on 127.0.0.1 on the first free port from 55432 and on
# a socket in its temp dir, with fsync off (the data is thrown away).
#
# PGBIN overrides where the PostgreSQL 15 binaries are.

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

throwaway_postgres_start() {
    if [[ ! -x "$PGBIN/postgres" ]]; then
        if [[ -n "${CI:-}" ]]; then
            echo "error: PostgreSQL binaries not found in $PGBIN (CI needs them)" >&2
            return 1
        fi
        echo "warning: no PostgreSQL in $PGBIN; PostgreSQL-backed tests will be skipped" >&2
        return 0
    fi

    local as_user=()
    PG_ROOT=$(mktemp -d /tmp/hypergate-pg.XXXXXX)
    if [[ $(id -u) -eq 0 ]]; then
        local pg_user=postgres
        if ! id "$pg_user" >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user"
        fi
        chown "$pg_user" "$PG_ROOT"
        as_user=(runuser -u "$pg_user" --)
    fi

    local port=55432
    while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
        if ((port > 55532)); then
            echo "error: no free port for the throwaway PostgreSQL" >&2
            return 1
        fi
    done

    "${as_user[@]}" "$PGBIN/initdb" -D "$PG_ROOT/data" -U postgres --auth=trust \
        -E UTF8 --locale=C.UTF-8 -N >"$PG_ROOT/initdb.log" 2>&1 || {
        cat "$PG_ROOT/initdb.log" >&2
        return 1
    }
    "${as_user[@]}" "$PGBIN/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/server.log" -w -s \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_ROOT -c fsync=off -c max_connections=200" \
        start || {
        cat "$PG_ROOT/server.log" >&2
        return 1
    }
    PG_AS_USER=("${as_user[@]}")
    trap throwaway_postgres_stop EXIT
    export HYPERGATE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    echo "throwaway PostgreSQL on 127.0.0.1:$port ($PG_ROOT)"
}

throwaway_postgres_stop() {
    if [[ -n "${PG_ROOT:-}" && -d "$PG_ROOT/data" ]]; then
        "${PG_AS_USER[@]}" "$PGBIN/pg_ctl" -D "$PG_ROOT/data" -m fast -w -s stop || true
    fi
    if [[ -n "${PG_ROOT:-}" ]]; then
        rm -rf "$PG_ROOT"
    fi
}

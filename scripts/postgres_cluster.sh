#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks of the PostgreSQL job store.
#
#   scripts/postgres_cluster.sh start DIR [PORT]   # prints the URL to export as KINEMA_TEST_POSTGRES
#   scripts/postgres_cluster.sh stop DIR
#
# The cluster lives in DIR (data, socket, log), trusts local connections of the user 'kinema' and listens on
# 127.0.0.1:PORT (default: a free port). initdb refuses to run as root, so as root the cluster runs as the
# 'postgres' user that Debian's package creates (apt-get install postgresql).
set -euo pipefail

bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$found" ]; then
        found=$(dirname "$(command -v initdb || echo /missing/initdb)")
    fi
    [ -x "$found/initdb" ] || { echo "error: no PostgreSQL server found (apt-get install postgresql)" >&2; exit 1; }
    echo "$found"
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

command=${1:-}
dir=${2:-}
[ -n "$command" ] && [ -n "$dir" ] || { echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2; }
bin=$(bindir)

case "$command" in
start)
    port=${3:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=kinema --auth=trust --encoding=UTF8 --no-sync \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    # Many workers and API processes each hold a connection or two; fsync stays on (what a deployment runs).
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=200" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://kinema@127.0.0.1:$port/postgres"
    ;;
stop)
    [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait stop >/dev/null || true
    ;;
*)
    echo "usage: $0 start DIR [PORT] | stop DIR" >&2
    exit 2
    ;;
esac

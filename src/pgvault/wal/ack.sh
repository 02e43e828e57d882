#!/bin/sh
# pgvault's archive_command when `pgvault wal-daemon` runs (printed by `pgvault wal-setup`):
#
#   /bin/sh ack.sh SPOOL ACK_TIMEOUT CONFIG %p PGVAULT_COMMAND...
#
# The daemon pushes segments ahead of PostgreSQL (from pg_wal/archive_status/*.ready) and, once
# a segment is durable in the sink, writes SPOOL/archive/<name>.ok holding the size and first
# 40 bytes (the long page header: magic, timeline, page address, system identifier) of the file
# it stored. This script costs PostgreSQL a shell, not a Python start, per segment:
#
#   .ok matches this very file  -> remove it, exit 0 (stored)
#   .ok for another file        -> stale (another cluster, an older incarnation): remove it and
#                                  store the file itself, synchronously
#   .error                      -> print the daemon's reason, exit 1 (PostgreSQL retries)
#   no daemon running           -> store the file itself: exec PGVAULT_COMMAND wal-push
#   no answer in ACK_TIMEOUT s  -> store the file itself
#
# It never exits 0 for a file the daemon has not acknowledged as stored, and never exits above
# 125 on its own (that would restart the archiver and hide the failure from pg_stat_archiver).
spool=$1
timeout=$2
config=$3
path=$4
shift 4
name=${path##*/}
store_it_myself() {
    exec "$@" wal-push "$config" "$path"
}
case $name in
    '' | *[!0-9A-Za-z._-]*) store_it_myself "$@" ;;  # wal-push refuses it with a clear line
esac
dir=$spool/archive
ok=$dir/$name.ok
error=$dir/$name.error
fingerprint() {
    size=$(wc -c < "$path") || return 1
    head=$(od -An -tx1 -N40 -v "$path" | tr -d ' \n') || return 1
    echo "pgvault-ack 1 $((size)) $head"
}
want=
polls=0
limit=$((timeout * 50))
while :; do
    if [ -f "$ok" ]; then
        line=
        IFS= read -r line < "$ok" 2>/dev/null
        if [ -z "$want" ]; then
            want=$(fingerprint) || store_it_myself "$@"
        fi
        if [ -n "$line" ] && [ "$line" = "$want" ]; then
            rm -f "$ok"
            exit 0
        fi
        if [ -n "$line" ]; then
            echo "pgvault: ignoring a stale acknowledgement of $name (written for another file); storing it now" >&2
            rm -f "$ok"
            store_it_myself "$@"
        fi
    fi
    if [ -f "$error" ]; then
        reason=$(cat "$error" 2>/dev/null)
        rm -f "$error"
        echo "pgvault: error: wal-daemon could not store $name: ${reason:-unknown reason}" >&2
        exit 1
    fi
    pid=
    IFS= read -r pid < "$dir/daemon.pid" 2>/dev/null
    case $pid in
        '' | *[!0-9]*) store_it_myself "$@" ;;
    esac
    kill -0 "$pid" 2>/dev/null || store_it_myself "$@"
    polls=$((polls + 1))
    if [ "$polls" -gt "$limit" ]; then
        echo "pgvault: wal-daemon did not store $name within ${timeout}s; storing it now" >&2
        store_it_myself "$@"
    fi
    sleep 0.02 2>/dev/null || sleep 1
done

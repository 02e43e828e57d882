#!/bin/sh
# pgvault's restore_command with prefetch (printed by `pgvault wal-setup`):
#
#   /bin/sh fetch.sh SPOOL CONFIG %f %p PGVAULT_COMMAND...
#
# A segment the prefetcher downloaded and verified (SHA-256, header against name and cluster)
# sits in SPOOL/fetch/<cluster>/<name>, with <name>.ok holding its size and first 40 bytes. If it
# is there, still has that size and header, and its header names this data directory's cluster
# (global/pg_control), it is moved to %p through a temporary name in pg_wal (so %p is complete or
# absent) and the prefetcher is told; no Python starts. Anything else, including every file that
# is not a plain segment, goes to `PGVAULT_COMMAND wal-fetch`, which downloads, checks and
# restarts the prefetcher, and decides the exit status (1 only when the file is not archived).
# A segment the prefetcher is downloading right now (<name>.inflight) is waited for, up to 5 s.
spool=$1
config=$2
file=$3
target=$4
shift 4
fetch_it() {
    exec "$@" wal-fetch "$config" "$file" "$target"
}
case $file in
    '' | *[!0-9A-F]*) fetch_it "$@" ;;
esac
[ "${#file}" -eq 24 ] || fetch_it "$@"
case $target in
    */*) folder=${target%/*} ;;
    *) folder=. ;;
esac
cluster=$(od -An -tx1 -N8 -v global/pg_control 2>/dev/null | tr -d ' \n')
[ "${#cluster}" -eq 16 ] || fetch_it "$@"
for dir in "$spool"/fetch/*/; do
    have=$dir$file
    # Being downloaded by the prefetcher: waiting for it beats starting a second download.
    waited=0
    while [ -f "$have.inflight" ] && [ ! -f "$have.ok" ] && [ "$waited" -lt 500 ]; do
        sleep 0.01 2>/dev/null || break
        waited=$((waited + 1))
    done
    [ -f "$have" ] && [ -f "$have.ok" ] || continue
    line=
    IFS= read -r line < "$have.ok" 2>/dev/null
    size=$(wc -c < "$have") || continue
    head=$(od -An -tx1 -N40 -v "$have" | tr -d ' \n') || continue
    [ "$line" = "pgvault-ack 1 $((size)) $head" ] || continue
    # Hex digits 49-64 of the header are the system identifier, in pg_control's byte order.
    rest=${head#????????????????????????????????????????????????}
    sysid=${rest%????????????????}
    [ "$sysid" = "$cluster" ] || continue
    temp=$folder/.pgvault-fetch-$file-$$
    if mv -f "$have" "$temp" 2>/dev/null; then
        rm -f "$have.ok"
        if mv -f "$temp" "$target"; then
            echo "$file" > "$dir.want.$$.tmp" && mv -f "$dir.want.$$.tmp" "${dir}want"
            exit 0
        fi
        rm -f "$temp"
    fi
done
fetch_it "$@"

# Sourced by scripts/benchmarks.sh and scripts/outbox-vs-manager.sh.
# Start each run from the same filesystem state: no dirty pages left by the
# previous run, and no cached inode-table blocks. This machine's ext4 has no
# journal, and without one ext4 will not hand out an inode freed in the last
# minute while its inode-table block is cached (`recently_deleted`): every
# run deletes 20,000-30,000 files as it ends, so the next run's creates scan
# past them. 10,000 creates took up to 2.2 s after such a deletion (0.14 s
# when the new directory landed elsewhere), 0.14-0.21 s with the caches
# dropped (see BENCHMARKS.md). Needs root; skipped otherwise,
# or with DROP_CACHES=0 (to measure under the previous run's leftovers).
settle() {
    sync
    if [ "${DROP_CACHES:-1}" = 0 ]; then
        return
    fi
    if ! (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
        echo "   (caches not dropped: /proc/sys/vm/drop_caches is not writable)" >&2
    fi
}

#!/usr/bin/env bash
# Runs the acceptance benchmarks of BENCHMARKS.md (P1–P6) with the release
# binary and keeps each `bench --json` report under target/bench-results/.
# Usage: [DROP_CACHES=0] [REST_SECONDS=400] [MILLION=0] [OUTBOX=0] scripts/benchmarks.sh [DATA_DIR]   (default: ./target/bench-data)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/status-update-manager
data=${1:-target/bench-data}
out=target/bench-results
mkdir -p "$data" "$out"
# settle: sync, then drop the page cache (scripts/settle.sh says why).
. scripts/settle.sh
run() {
    local name=$1; shift
    settle
    echo "== $name: bench $*" >&2
    "$bin" bench --json --data-dir "$data" "$@" > "$out/$name.json"
}
# P3: one stream, light load (one update at a time), first: a latency
# figure wants a quiet disk, and ext4 is still busy for a while after the
# runs below delete their 10,000-file directories.
run p3-batch-1-light --streams 1 --updates 2000 --sync batch --concurrency 1
# P1: no sync, 10,000 streams (files beyond --max-open-files are reopened on demand).
# With every file open the load's 10,000 creates are a large part of its time,
# and on ext4 without a journal they crawl for up to 360 s after many files
# were deleted nearby (the inode allocator skips each recently freed inode, and
# the load creates its files first): REST_SECONDS (default 400; 0 to skip) of
# nothing deleted before it, so that the load and the loop create their files
# on the same quiet filesystem (BENCHMARKS.md, "P1 at rest").
rest=${REST_SECONDS:-400}
if [ "$rest" -gt 0 ]; then
    echo "   (P1 with every file open: ${rest} s with nothing deleted first)" >&2
    sleep "$rest"
fi
run p1-none-10k             --streams 10000 --updates 20 --sync none --max-open-files 16384
run p1-none-10k-default-fds --streams 10000 --updates 20 --sync none
# P2: group commit against a sync per record, 10,000 streams, back to back
# (the `always` run takes a few minutes: one fdatasync per record).
run p2-batch-10k  --streams 10000 --updates 20 --sync batch --max-open-files 16384
run p2-always-10k --streams 10000 --updates 20 --sync always --max-open-files 16384
# P4/P5: 100,000 streams, one pending update each, within ulimit -n.
run p5-100k-pending --streams 100000 --updates 1 --sync batch --no-ack
# P6: the same load through gRPC, against in-process in the same run, on
# the streaming calls (`grpc-stream`) and on a unary call per update and ack
# (`grpc`), in turn; three runs of each (its 20,000 updates take well under a
# second, and the ratio moves from run to run): BENCHMARKS.md gives medians.
for n in 1 2 3; do
    run p6-stream-$n --streams 1000 --updates 20 --sync batch --via grpc-stream
    run p6-grpc-$n   --streams 1000 --updates 20 --sync batch --via grpc
done
# P4/P5 at 1,000,000 streams, one pending update each (a file per stream,
# at most 4,096 open at once): `recovery` gives the files and disk space.
# MILLION=0 skips it.
if [ "${MILLION:-1}" != 0 ]; then
    run p45-1m-pending --streams 1000000 --updates 1 --sync batch --no-ack
fi
echo "reports in $out" >&2
# The manager against a SQLite outbox with its rules, interleaved A B A B A B
# (`batch`/FULL and `none`/OFF, 10,000 and 1,000 streams): medians and the
# ratio manager / outbox. OUTBOX=0 skips it.
if [ "${OUTBOX:-1}" != 0 ]; then
    scripts/outbox-vs-manager.sh "$data"
fi

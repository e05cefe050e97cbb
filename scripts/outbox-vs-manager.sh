#!/usr/bin/env bash
# The manager against a SQLite outbox with its rules (examples/sqlite_outbox.rs)
# on the same load: `status-update-manager bench` (A) and the outbox (B) run
# interleaved, A B A B A B, for each sync policy (`batch` against
# synchronous=FULL, `none` against synchronous=OFF) and size; prints each run,
# the medians and the ratio manager / outbox of acknowledged updates/s (and of
# updates/s), and keeps every report under target/bench-results/outbox-vs-manager/.
# Called by scripts/benchmarks.sh; BENCHMARKS.md, "The manager against a SQLite outbox".
#
# Usage: [PAIRS=3] [SIZES="10000 1000"] [UPDATES=20] [SYNCS="batch none"]
#        [CONCURRENCY=N] [PROFILE=release|debug] [DROP_CACHES=0]
#        scripts/outbox-vs-manager.sh [DATA_DIR]   (default: ./target/bench-data)
# Both take their defaults but for what is set here (--concurrency: 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${PAIRS:-3}
sizes=${SIZES:-10000 1000}
updates=${UPDATES:-20}
syncs=${SYNCS:-batch none}
profile=${PROFILE:-release}
case $profile in
    release) cargo build --release --quiet --bin status-update-manager --example sqlite_outbox ;;
    debug) cargo build --quiet --bin status-update-manager --example sqlite_outbox ;;
    *) echo "PROFILE is release or debug, not '$profile'" >&2; exit 2 ;;
esac
manager=target/$profile/status-update-manager
outbox=target/$profile/examples/sqlite_outbox
data=${1:-target/bench-data}
out=target/bench-results/outbox-vs-manager
mkdir -p "$data" "$out"
extra=()
if [ -n "${CONCURRENCY:-}" ]; then
    extra=(--concurrency "$CONCURRENCY")
fi

# settle: sync, then drop the page cache (scripts/settle.sh says why).
. scripts/settle.sh
# A top-level number of a pretty-printed `--json` report.
field() {
    sed -n "s/^  \"$1\": \([-0-9.eE+]*\),\{0,1\}\$/\1/p" "$2"
}
# The median (the upper middle one of an even count), as `bench` takes it.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int(NR / 2) + 1] }'
}
k() {
    awk -v v="$1" 'BEGIN { printf "%.1f k", v / 1000 }'
}

echo "# manager (A) against SQLite outbox (B), $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $profile build, load average $(cut -d' ' -f1-3 /proc/loadavg)"
summary=()
for sync in $syncs; do
    case $sync in
        batch) synchronous=FULL ;;
        none) synchronous=OFF ;;
        *) echo "SYNCS holds batch and none, not '$sync'" >&2; exit 2 ;;
    esac
    for streams in $sizes; do
        args=(--json --data-dir "$data" --streams "$streams" --updates "$updates" --sync "$sync" "${extra[@]}")
        m_acks=() o_acks=() m_updates=() o_updates=()
        for pair in $(seq 1 "$pairs"); do
            name=$sync-$streams-$pair
            settle
            echo "== $name A: bench ${args[*]}" >&2
            "$manager" bench "${args[@]}" > "$out/$name-manager.json"
            settle
            echo "== $name B: sqlite_outbox ${args[*]}" >&2
            "$outbox" "${args[@]}" > "$out/$name-outbox.json"
            m_acks+=("$(field acks_per_sec "$out/$name-manager.json")")
            o_acks+=("$(field acks_per_sec "$out/$name-outbox.json")")
            m_updates+=("$(field updates_per_sec "$out/$name-manager.json")")
            o_updates+=("$(field updates_per_sec "$out/$name-outbox.json")")
            echo "   pair $pair: manager $(k "${m_acks[-1]}") acked/s, outbox $(k "${o_acks[-1]}") acked/s" >&2
        done
        ma=$(median "${m_acks[@]}") oa=$(median "${o_acks[@]}")
        mu=$(median "${m_updates[@]}") ou=$(median "${o_updates[@]}")
        list() { for v in "$@"; do printf '%s, ' "$(k "$v")"; done | sed 's/, $//'; }
        summary+=("| \`$sync\` / \`$synchronous\` | $streams × $updates | $(list "${m_acks[@]}") | **$(k "$ma")** | $(list "${o_acks[@]}") | **$(k "$oa")** | **$(awk -v a="$ma" -v b="$oa" 'BEGIN { printf "%.2f", a / b }')** | $(awk -v a="$mu" -v b="$ou" 'BEGIN { printf "%.2f", a / b }') |")
    done
done
echo
echo "| sync (manager / outbox) | load | manager acked/s, pairs 1–$pairs | median | outbox acked/s, pairs 1–$pairs | median | manager / outbox | the same, updates/s |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
echo "reports in $out" >&2

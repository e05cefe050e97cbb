#!/usr/bin/env bash
# The fleet test's long run (tests/jetstream_fleet.rs; RELIABILITY.md, "JetStream fleet"):
# three clustered nats-servers, the stream at 3 replicas, SUM_FLEET_NODES
# `serve` processes under producers, serves SIGKILLed and restarted every
# 0.5-2 s and one nats-server SIGKILLed and restarted, then a consumer
# checks the whole stream. Prints the `fleet:` lines; exits non-zero if an
# update was lost or out of order.
# Usage: [SUM_FLEET_SECONDS=600] [SUM_FLEET_NODES=6] [SUM_FLEET_SEED=N] [PROFILE=release] scripts/fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SUM_FLEET_SECONDS=${SUM_FLEET_SECONDS:-600}
export SUM_FLEET_NODES=${SUM_FLEET_NODES:-6}
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    echo "error: nats-server is missing: apt-get install -y nats-server" >&2
    exit 1
fi
profile=()
if [ "${PROFILE:-dev}" = release ]; then
    profile=(--release)
fi
log=target/fleet-$(date +%Y%m%d-%H%M%S).log
mkdir -p target
echo "fleet: ${SUM_FLEET_SECONDS} s, ${SUM_FLEET_NODES} nodes; full output in $log"
status=0
cargo test "${profile[@]}" --test jetstream_fleet -- --nocapture >"$log" 2>&1 || status=$?
grep -E '^fleet:|^test |test result' "$log" || true
if [ "$status" != 0 ]; then
    tail -40 "$log" >&2
fi
exit "$status"

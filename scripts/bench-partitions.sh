#!/usr/bin/env bash
# BENCHMARKS.md "Network partitions": the seeded partition schedules of
# tests/it/partition.rs (3 store nodes, each in its own network namespace, under register
# load), one process per seed so that a failing or hanging seed is counted and kept rather
# than ending the run. Prints the seeds run, the failures (with the command that reruns
# each), and the isolated-leader failover time (leader cut off -> first write acknowledged
# through the majority) p50 and max over every isolated-leader episode.
#
# Usage (as root: namespaces and iptables): scripts/bench-partitions.sh [SEEDS]
#   SEEDS defaults to CAIRN_SIM_SEEDS, else 50. CAIRN_BENCH_SEED_TIMEOUT (s, default 600)
#   bounds one seed: past it the seed counts as a hang.
# Builds the integration tests in the test (debug) profile, as CI runs them: the
# failover time is dominated by the election timeout (lan: 1.5-2 s after the last
# heartbeat), not by the build profile.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-${CAIRN_SIM_SEEDS:-50}}
per_seed_timeout=${CAIRN_BENCH_SEED_TIMEOUT:-600}
test_name=partition::seeded_partition_schedules_lose_no_acknowledged_write_and_stay_linearizable

if [ "$(id -u)" != 0 ]; then
    echo "bench-partitions: needs root (network namespaces, iptables)" >&2
    exit 1
fi
cargo test --test it --no-run -q
logs=$(mktemp -d /tmp/bench-partitions.XXXXXX)
export CAIRN_REQUIRE_ROOT_TESTS=1
failed=()
start=$(date +%s)
for i in $(seq 1 "$seeds"); do
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    log="$logs/seed-$seed.log"
    if CAIRN_PARTITION_SEED=$seed timeout "$per_seed_timeout" \
        cargo test -q --test it "$test_name" -- --exact --nocapture >"$log" 2>&1; then
        status=passed
    else
        status="FAILED (exit $?)"
        failed+=("$seed")
    fi
    echo "seed $i/$seeds $seed: $status"
done
elapsed=$(( $(date +%s) - start ))

echo
echo "seeds run: $seeds in ${elapsed}s, failed: ${#failed[@]}"
for seed in "${failed[@]}"; do
    echo "  failed seed $seed: log $logs/seed-$seed.log;" \
         "rerun: CAIRN_PARTITION_SEED=$seed cargo test --test it $test_name -- --exact --nocapture"
done
# One failover_ms=N line per isolated-leader episode.
cat "$logs"/seed-*.log | sed -n 's/^failover_ms=\([0-9]*\).*/\1/p' | sort -n | awk '
    { v[NR] = $1 }
    END {
        if (NR == 0) { print "isolated-leader failover: no episode ran"; exit }
        p50 = v[int((NR + 1) / 2)]
        printf "isolated-leader failover (isolate -> first acknowledged write on the majority): " \
               "n=%d p50 %d ms, max %d ms\n", NR, p50, v[NR]
    }'
if [ "${#failed[@]}" = 0 ]; then
    rm -rf "$logs"
else
    echo "logs kept in $logs"
    exit 1
fi

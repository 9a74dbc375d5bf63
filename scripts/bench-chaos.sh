#!/usr/bin/env bash
# The service-level chaos figures of BENCHMARKS.md "Service chaos": the chaos test of
# tests/it/chaos/ at full size (100 runs, 90 s of faults by default) once per seed, each
# in its own test process; prints each seed's result line and takeovers, then the totals.
# Usage: scripts/bench-chaos.sh [SEED ...]   (default: CAIRN_SIM_SEEDS random seeds, 5)
# Knobs: CAIRN_CHAOS_RUNS (100), CAIRN_CHAOS_SECS (90), CARGO_TARGET_DIR.
# Run it as root (with ip and iptables): the nodes then run in network namespaces and the
# schedule partitions them. Without root it runs the nodes on loopback without partitions
# (each result line says net=netns or net=loopback); CAIRN_REQUIRE_ROOT_TESTS=1 makes that
# a failure instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export CAIRN_CHAOS_RUNS=${CAIRN_CHAOS_RUNS:-100}
export CAIRN_CHAOS_SECS=${CAIRN_CHAOS_SECS:-90}
seeds=("$@")
if [ ${#seeds[@]} -eq 0 ]; then
    for _ in $(seq "${CAIRN_SIM_SEEDS:-5}"); do seeds+=("$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')"); done
fi
# The test binary, built once (later edits of the tree do not change a bench under way).
bin=$(cargo test --test it --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\))$/\1/p' | tail -n 1)
out=$(mktemp -d)
status=0
for seed in "${seeds[@]}"; do
    log="$out/$seed.log"
    if ! CAIRN_CHAOS_SEED=$seed "$bin" chaos::runs_succeed --nocapture >"$log" 2>&1; then
        status=1
        echo "seed $seed FAILED (log: $log)"
        grep -A12 "panicked at" "$log" | head -20 || true
    fi
    grep -E '^chaos (result|takeover|client failure)' "$log" || true
done
echo "== totals over ${#seeds[@]} seeds (logs in $out)"
python3 - "$out" <<'PY'
import glob, sys
lines = [l for f in glob.glob(sys.argv[1] + "/*.log") for l in open(f) if l.startswith("chaos result ")]
results = [dict(kv.split("=", 1) for kv in l.split()[2:]) for l in lines]
t = lambda k: sum(int(r[k]) for r in results)
print(f"seeds {len(results)}: runs {t('runs')} acknowledged {t('acked')} succeeded {t('succeeded')}; "
      f"faults {t('faults')}; lost attempts {t('lost_attempts')}, tasks run again {t('retried_tasks')}, "
      f"of which after an unreported completion {t('unreported_reruns')}; marker violations {t('double_executions')}; "
      f"incomplete logs {t('bad_logs')}; client failures {t('client_failures')}; "
      f"rounds with two active schedulers {t('scheduler_overlap_rounds')}; "
      f"partitions {sum(int(r.get('partitions', 0)) for r in results)} "
      f"(net: {sorted(set(r.get('net', '?') for r in results))})")
kills = [r for r in results if int(r["holder_kills"]) > 0]
if kills:
    print(f"scheduler takeover after a holder kill: {t('holder_kills')} kills, max "
          f"{max(int(r['takeover_max_ms']) for r in kills)} ms, seed means "
          f"{sorted(int(r['takeover_mean_ms']) for r in kills)} ms")
PY
exit $status

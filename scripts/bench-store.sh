#!/usr/bin/env bash
# The store benchmark: Cairn (release build) against etcd 3.4, both as real processes on
# loopback through the same etcd v3 JSON HTTP client. See BENCHMARKS.md.
#
#   scripts/bench-store.sh            # everything (~3-5 minutes)
#   CAIRN_BENCH_ENGINE=mem scripts/bench-store.sh
#   CAIRN_BENCH_NO_ETCD=1 scripts/bench-store.sh
#
# Other knobs (CAIRN_BENCH_WRITES_1, _WRITES_64, _READS, _TRIALS, _MAX_SECS, _DIR,
# ETCD_BIN, CAIRN_BIN) are described at the top of benches/bench.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

etcd_bin="${ETCD_BIN:-/usr/bin/etcd}"
if [ -z "${CAIRN_BENCH_NO_ETCD:-}" ] && [ ! -x "$etcd_bin" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bench-store: installing etcd 3.4 (Debian's etcd-server)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y etcd-server >&2 || { apt-get update >&2 && apt-get install -y etcd-server >&2; }
    fi
    if [ ! -x "$etcd_bin" ]; then
        echo "bench-store: no etcd at $etcd_bin and cannot install it (needs root and apt-get):" \
             "SKIPPING the etcd scenarios; Cairn is measured alone, without ratios" >&2
        export CAIRN_BENCH_NO_ETCD=1
    fi
fi

features=()
if [ "${CAIRN_BENCH_ENGINE:-redb}" = rocksdb ]; then
    features=(--features rocksdb)
fi
cargo build --release --bin cairn "${features[@]}"
exec cargo bench "${features[@]}" --bench bench -- store "$@"

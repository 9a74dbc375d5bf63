#!/usr/bin/env bash
# The developer-facing figures of BENCHMARKS.md "CLI":
#  1. `cairn run examples/hello` with a warm data dir: wall time, and the overhead over the
#     tasks' own time (wall time minus the sum of the task durations the summary prints);
#  2. `cairn serve` from spawn to /readyz answering 200.
# Usage: scripts/bench-cli.sh [N]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
cargo build --release -q
BIN=$PWD/target/release/cairn
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; pkill -f "$BIN serve --data-dir $WORK" || true' EXIT
cp -r examples/hello "$WORK/hello"
"$BIN" run "$WORK/hello" --data-dir "$WORK/data" >/dev/null   # warm-up: creates the node
python3 - "$BIN" "$WORK" "$N" <<'PY'
import re, statistics, subprocess, sys, time, urllib.request
bin_, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
walls, overheads = [], []
for _ in range(n):
    t0 = time.perf_counter()
    out = subprocess.run([bin_, "run", f"{work}/hello", "--data-dir", f"{work}/data"],
                         capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    tasks = sum(float(m) for m in re.findall(r"^\S+\s+success\s+([\d.]+)s$", out, re.M))
    walls.append(wall); overheads.append(wall - tasks)
q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
print(f"cairn run examples/hello (warm, n={n}): wall p50 {q(walls,.5)*1000:.0f} ms p90 {q(walls,.9)*1000:.0f} ms; "
      f"overhead over the tasks' own time p50 {q(overheads,.5)*1000:.0f} ms p90 {q(overheads,.9)*1000:.0f} ms")
ready = []
for i in range(min(n, 10)):
    d = f"{work}/serve{i % 2}"
    t0 = time.perf_counter()
    p = subprocess.Popen([bin_, "serve", "--data-dir", d, "--listen", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    url = re.search(r"serving on (\S+)", line).group(1)
    while True:
        try:
            if urllib.request.urlopen(url + "/readyz", timeout=1).status == 200:
                break
        except Exception:
            time.sleep(0.005)
    ready.append(time.perf_counter() - t0)
    p.terminate(); p.wait()
print(f"cairn serve spawn -> /readyz 200 (n={len(ready)}, fresh and restarted data dirs): "
      f"p50 {q(ready,.5)*1000:.0f} ms max {max(ready)*1000:.0f} ms")
PY

#!/usr/bin/env bash
# BENCHMARKS.md "Export and import": import and export of N runs (default 100,000) through
# a release `cairn serve`: wall time and the server's peak RSS (VmHWM) for each, to show
# that memory does not grow with the export's size. The export to import is generated
# (valid runs, configs, counters, the trailer's checksum), not built through the API.
# Usage: scripts/bench-exchange.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
cargo build --release -q
BIN=$PWD/target/release/cairn
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 - "$WORK/in.ndjson" "$N" <<'PY'
import hashlib, json, sys
path, n = sys.argv[1], int(sys.argv[2])
h = hashlib.sha256()
count = 0
with open(path, "w") as f:
    def line(obj, hashed=True):
        global count
        s = json.dumps(obj, separators=(",", ":")) + "\n"
        if hashed:
            h.update(s.encode())
        f.write(s)
    line({"format": "cairn-export", "version": 1, "revision": 1})
    groups = 50
    keys = []
    keys.append(("rs/counter/p%d" % 0, None))
    entries = []
    for g in range(groups):
        entries.append(("rs/counter/p%03d" % g, str(n // groups + 1)))
    for i in range(1, n + 1):
        rid = "%016d" % i
        g = i % groups
        group = "/project/p%03d/branch/main" % g
        t = "00000000-0000-4000-8000-%012d" % i
        task = {"id": t, "status": "success", "setup_step": {"phase": "success", "log_phase": "finished"},
                "steps": [{"phase": "success", "log_phase": "finished", "exit_status": 0}]}
        run = {"id": rid, "name": "ci", "counter": i // groups + 1, "group": group, "phase": "finished",
               "result": "success", "tasks": {t: task}, "archived": True}
        cfg = {"id": rid, "name": "ci", "group": group, "tasks": {t: {"id": t, "name": "build", "level": 0,
               "runtime": {"containers": [{"image": "busybox"}]}, "steps": [{"type": "run", "command": "make"}]}}}
        entries.append(("rs/run/" + rid, json.dumps(run, separators=(",", ":"))))
        entries.append(("rs/runconfig/" + rid, json.dumps(cfg, separators=(",", ":"))))
    entries.append(("rs/seq/run", str(n)))
    entries.sort(key=lambda e: e[0])
    for k, v in entries:
        line({"key": k, "value": v})
        count += 1
    line({"trailer": {"entries": count, "sha256": h.hexdigest()}}, hashed=False)
PY
ls -l "$WORK/in.ndjson" | awk '{printf "export file: %.1f MB\n", $5/1e6}'
"$BIN" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 --no-executor > "$WORK/serve.out" 2>/dev/null &
PID=$!
for _ in $(seq 1 200); do grep -q "serving on" "$WORK/serve.out" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's/.*serving on \([^ ]*\) .*/\1/p' "$WORK/serve.out")
TOKEN=$(cat "$WORK/data/token")
C="--server $URL --token $TOKEN"
hwm() { awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$PID/status; }
rss() { awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$PID/status; }
echo "server RSS before: $(rss), peak $(hwm)"
"$BIN" maintenance on $C >/dev/null
for _ in $(seq 1 100); do "$BIN" maintenance status $C | grep -q ": maintenance" && break; sleep 0.05; done
T0=$(date +%s.%N); "$BIN" import "$WORK/in.ndjson" $C; T1=$(date +%s.%N)
echo "import: $(echo "$T1 - $T0" | bc) s; server RSS now $(rss), peak $(hwm)"
T0=$(date +%s.%N); "$BIN" export $C > "$WORK/out.ndjson"; T1=$(date +%s.%N)
echo "export: $(echo "$T1 - $T0" | bc) s, $(wc -l < "$WORK/out.ndjson") lines; server RSS now $(rss), peak $(hwm)"
"$BIN" maintenance off $C >/dev/null

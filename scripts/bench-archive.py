#!/usr/bin/env python3
"""BENCHMARKS.md "Archived runs" (issue 13): a 3-node `cairn serve` cluster on loopback
sharing one object storage directory, filled by import with N finished, archived runs
(the import writes them into segments, not into the store), then measured:

- import wall time and the importing node's peak RSS (VmHWM);
- how long each node's own index of archived runs takes to be complete after the import;
- every node's RSS once settled, the size of the store's state (a snapshot of it, saved
  with `cairn store snapshot save`: what a Raft snapshot holds) and node 0's data dir;
- GET /runs?limit=25 newest first, by group and by result, and GET /runs/{id} of an
  archived run cold (ids never read) and warm, p50/p99 over keep-alive connections to a
  follower;
- export throughput;
- a fourth node joining: until it serves, and until its index is complete.

Usage: scripts/bench-archive.py [N ...]   (default: 1000 10000 100000)
Needs a release build (`cargo build --release`); CAIRN_BIN overrides the binary;
CAIRN_BENCH_DIR says where the work directories go, CAIRN_BENCH_KEEP=1 keeps them (logs).
"""
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOKEN = "cairn-bench-archive-token"
GROUPS = 50
BIN = os.environ.get("CAIRN_BIN", os.path.join(os.path.dirname(__file__), "..", "target", "release", "cairn"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Node:
    def __init__(self, work, i, objects, join=None):
        self.data = os.path.join(work, "n%d" % i)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        args = [BIN, "serve", "--token", TOKEN, "--no-executor", "--data-dir", self.data,
                "--listen", "127.0.0.1:%d" % self.port, "--objects", objects]
        args += ["--join", join] if join else ["--init"]
        self.log = open(os.path.join(work, "n%d.log" % i), "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=dict(os.environ, CAIRN_LOG="warn,cairn::history=info"))
        for line in self.proc.stdout:
            if "serving on" in line:
                break
        self.ready = time.monotonic() - self.started
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def get(self, path, own=False):
        """GET /api/v1<path>; `own`: answered from this node's own index only (marked as
        forwarded by a peer, so it is neither forwarded nor kept waiting: 503 until the
        index holds it)."""
        headers = {"Authorization": "Bearer " + TOKEN}
        if own:
            headers["x-cairn-forwarded"] = "bench"
        self.conn.request("GET", "/api/v1" + path, headers=headers)
        resp = self.conn.getresponse()
        body = resp.read()
        return resp.status, body

    def status(self, key):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def cli(*args):
    out = subprocess.run([BIN, *args, "--token", TOKEN], check=True, capture_output=True, text=True)
    return out.stdout


def export_to_file(path, server):
    """Seconds `cairn export` takes to write its stream to `path`, and the lines in it."""
    with open(path, "wb") as f:
        t0 = time.monotonic()
        subprocess.run([BIN, "export", *server, "--token", TOKEN], check=True, stdout=f)
        secs = time.monotonic() - t0
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    os.remove(path)
    return secs, lines


def generate(path, n):
    """An export (format 2) of n finished runs archived in segments, in 50 groups, one in
    ten failed, with the counters and the run sequence."""
    key = hashlib.sha256(b"cairn export hmac v1\0" + TOKEN.encode()).digest()
    sha = hashlib.sha256()
    mac = hmac.new(key, digestmod=hashlib.sha256)
    count = 0
    with open(path, "w") as f:
        def line(obj, counted=True):
            nonlocal count
            s = json.dumps(obj, separators=(",", ":")) + "\n"
            sha.update(s.encode())
            mac.update(s.encode())
            f.write(s)
            if counted:
                count += 1
        line({"format": "cairn-export", "version": 2, "revision": 1, "redacted": False}, counted=False)
        entries = [("rs/counter/p%03d" % g, str(n // GROUPS + 1)) for g in range(GROUPS)]
        entries.append(("rs/seq/run", str(n)))
        for k, v in sorted(entries):
            line({"key": k, "value": v})
        for i in range(1, n + 1):
            rid = "%016d" % i
            group = "/p%03d/branch/main" % (i % GROUPS)
            t = "00000000-0000-4000-8000-%012d" % i
            result = "failed" if i % 10 == 0 else "success"
            step = {"phase": result, "log_phase": "finished", "exit_status": 1 if result == "failed" else 0}
            task = {"id": t, "status": result, "setup_step": {"phase": "success", "log_phase": "finished"},
                    "steps": [step]}
            run = {"id": rid, "name": "ci", "counter": i // GROUPS + 1, "group": group, "phase": "finished",
                   "result": result, "tasks": {t: task}, "archived": True}
            cfg = {"id": rid, "name": "ci", "group": group, "tasks": {t: {"id": t, "name": "build", "level": 0,
                   "runtime": {"containers": [{"image": "busybox"}]}, "steps": [{"type": "run", "command": "make"}]}}}
            line({"archived": {"run": run, "config": cfg, "events": []}})
        trailer = {"trailer": {"entries": count, "sha256": sha.hexdigest(), "hmac": mac.hexdigest()}}
        f.write(json.dumps(trailer, separators=(",", ":")) + "\n")


def timed(node, paths):
    """p50 and p99 in ms of GETs of paths (each must answer 200)."""
    times = []
    for p in paths:
        t0 = time.perf_counter()
        status, body = node.get(p)
        times.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise SystemExit("GET %s on %s: %d %s" % (p, node.url, status, body[:200]))
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def wait_indexed(node, last_id, since, own=True):
    """Seconds from `since` until `node` answers GET /runs/<last_id>: from its own index
    (`own`), or by any means (a peer answering for it while its index is behind)."""
    while True:
        status, _ = node.get("/runs/" + last_id, own=own)
        if status == 200:
            return time.monotonic() - since
        if time.monotonic() - since > 600:
            raise SystemExit("%s: index not complete within 600 s" % node.url)
        time.sleep(0.05)


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total / 1e6


def bench(n):
    work = tempfile.mkdtemp(prefix="cairn-bench-archive-", dir=os.environ.get("CAIRN_BENCH_DIR"))
    objects = os.path.join(work, "objects")
    nodes = []
    try:
        nodes.append(Node(work, 0, objects))
        for i in (1, 2):
            nodes.append(Node(work, i, objects, join=nodes[0].url))
        export = os.path.join(work, "in.ndjson")
        generate(export, n)
        size = os.path.getsize(export) / 1e6
        server = ["--server", nodes[0].url]
        cli("maintenance", "on", *server)
        for _ in range(200):
            if cli("maintenance", "status", *server).count(": maintenance") >= 3:
                break
            time.sleep(0.05)
        t0 = time.monotonic()
        cli("import", export, *server)
        imported = time.monotonic() - t0
        cli("maintenance", "off", *server)
        peak = nodes[0].status("VmHWM")
        since = time.monotonic()
        last = "%016d" % n
        index_secs = [wait_indexed(node, last, since) for node in nodes]
        time.sleep(2)
        rss = [node.status("VmRSS") for node in nodes]
        # The store's state as a Raft snapshot holds it (etcd's maintenance snapshot of
        # the same state machine), saved from node 0.
        snap = os.path.join(work, "store.snapshot")
        subprocess.run([BIN, "store", "snapshot", "save", snap, "--endpoints", nodes[0].url,
                        "--token", TOKEN], check=True, capture_output=True)
        snapshot = "%.2f MB" % (os.path.getsize(snap) / 1e6)
        follower = nodes[1]
        rows = {
            "newest 25": timed(follower, ["/runs?limit=25"] * 200),
            "by group 25": timed(follower, ["/runs?limit=25&group=/p%03d" % (i % GROUPS) for i in range(200)]),
            "by result 25": timed(follower, ["/runs?limit=25&result=failed"] * 200),
        }
        ids = random.sample(range(1, n + 1), min(200, n))
        rows["run by id, cold"] = timed(follower, ["/runs/%016d" % i for i in ids])
        rows["run by id, warm"] = timed(follower, ["/runs/%016d" % i for i in ids])
        # The export goes to a file, as an operator's would: reading it into this
        # process (and decoding it) would put the bench's own work on the clock.
        exported, lines = export_to_file(os.path.join(work, "out.ndjson"), server)
        joiner = Node(work, 3, objects, join=nodes[0].url)
        nodes.append(joiner)
        join_ready = joiner.ready
        join_answers = wait_indexed(joiner, last, joiner.started, own=False)
        join_index = wait_indexed(joiner, last, joiner.started)
        print("| %s | %.1f MB | %.1f s | %.0f MiB | %s | %s | %s | %.1f MB |" % (
            format(n, ","), size, imported, peak,
            " / ".join("%.1f s" % s for s in index_secs),
            " / ".join("%.0f MiB" % r for r in rss), snapshot, du(nodes[0].data)))
        for name, (p50, p99) in rows.items():
            print("|   %s | p50 %.2f ms | p99 %.2f ms |" % (name, p50, p99))
        print("|   export | %.2f s | %d lines | %.0f runs/s |" % (exported, lines, n / exported))
        print("|   4th node joins | serving %.1f s | answers an archived run %.1f s | own index complete %.1f s |" % (
            join_ready, join_answers, join_index))
        sys.stdout.flush()
    finally:
        for node in nodes:
            node.stop()
        if os.environ.get("CAIRN_BENCH_KEEP"):
            print("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000, 100000]
    print("| runs | export file | import | import peak RSS | index complete (3 nodes) | RSS (3 nodes) | snapshot | node 0 data dir |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        bench(n)


if __name__ == "__main__":
    main()

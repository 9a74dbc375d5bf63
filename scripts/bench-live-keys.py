#!/usr/bin/env python3
"""BENCHMARKS.md "Live keys" (issue 13, deliverable 6): memory of one `cairn serve` node as
live keys pile up in its store. N keys of SIZE bytes are put through the etcd JSON API
(100 per txn), then the node's RSS is read once settled, and one value is read back.

Usage: scripts/bench-live-keys.py BINARY N SIZE   (e.g. target/release/cairn 100000 2048)
"""
import base64, http.client, json, os, socket, subprocess, sys, tempfile, time, shutil
BIN = sys.argv[1]; N = int(sys.argv[2]); SIZE = int(sys.argv[3])
TOKEN = "live-keys-token"
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
work = tempfile.mkdtemp(prefix="livekeys-")
p = subprocess.Popen([BIN, "serve", "--token", TOKEN, "--no-executor", "--data-dir", work + "/d",
                      "--listen", "127.0.0.1:%d" % port, "--objects", work + "/o", "--init"],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
for line in p.stdout:
    if "serving on" in line: break
def rss():
    for l in open("/proc/%d/status" % p.pid):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
b64 = lambda b: base64.b64encode(b).decode()
time.sleep(1); before = rss()
for start in range(0, N, 100):
    ops = [{"request_put": {"key": b64(b"live/%08d" % i), "value": b64(bytes([97 + i % 26]) * SIZE)}}
           for i in range(start, min(N, start + 100))]
    c.request("POST", "/v3/kv/txn", body=json.dumps({"success": ops}),
              headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    r = c.getresponse(); body = r.read()
    if r.status != 200: raise SystemExit("txn: %d %s" % (r.status, body[:200]))
time.sleep(3)
after = rss()
c.request("POST", "/v3/kv/range", body=json.dumps({"key": b64(b"live/00000007")}),
          headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
r = c.getresponse(); got = json.loads(r.read())
assert base64.b64decode(got["kvs"][0]["value"]) == bytes([97 + 7]) * SIZE
print("%s: %d live keys of %d B (%.0f MB of values): RSS %d -> %d MiB" % (os.path.basename(BIN), N, SIZE, N * SIZE / 1e6, before, after))
p.kill(); p.wait(); shutil.rmtree(work, ignore_errors=True)

#!/usr/bin/env python3
"""Scheduler takeover after kill -9 of its holder, on a three-node `cairn serve` cluster.

Each trial finds the node whose scheduler is active, kills it, and times until another
node reports its scheduler active (GET /api/v1/cluster polled every 20 ms); the killed
node is restarted and the next trial waits until it has caught up. Prints each trial and
p50/max for holders that were the store leader and holders that were followers.

    cargo build --release && python3 scripts/bench-takeover.py [TRIALS]
    CAIRN_BIN=target/debug/cairn python3 scripts/bench-takeover.py 8
"""
import subprocess, time, json, urllib.request, os, shutil, sys
B=os.environ.get("CAIRN_BIN", "target/release/cairn")
base=os.environ.get("CAIRN_BENCH_DIR", "/tmp/cairn-bench-takeover"); shutil.rmtree(base, ignore_errors=True); os.makedirs(base)
env=dict(os.environ, CAIRN_LOG="warn,openraft=error")
ports=[7601,7602,7603]; procs={}
def start(i, first=False, join=None):
    args=[B,"serve","--token","tok","--no-executor","--data-dir",f"{base}/n{i}","--listen",f"127.0.0.1:{ports[i]}","--objects",f"{base}/obj"]
    if join: args+=["--join",join]
    procs[i]=subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(f"{base}/log{i}","a"))
def info(i):
    try:
        r=urllib.request.Request(f"http://127.0.0.1:{ports[i]}/api/v1/cluster", headers={"Authorization":"Bearer tok"})
        return json.load(urllib.request.urlopen(r, timeout=0.5))
    except Exception: return None
def wait(pred, t=60):
    end=time.time()+t
    while time.time()<end:
        v=pred()
        if v is not None: return v
        time.sleep(0.02)
    raise SystemExit("timeout in " + pred.__name__ + " " + str([info(i) and (info(i)["scheduler_active"], info(i)["state"]) for i in procs]))
start(0); wait(lambda: info(0))
start(1, join="http://127.0.0.1:7601"); wait(lambda: info(1))
start(2, join="http://127.0.0.1:7601"); wait(lambda: info(2))
wait(lambda: (info(0) or {}).get("voters") and len(info(0)["voters"])==3 or None)
results=[]
for trial in range(int(sys.argv[1]) if len(sys.argv)>1 else 6):
    def holder():
        vs={i:info(i) for i in procs if procs[i].poll() is None}
        if any(v is None for v in vs.values()): return None
        act=[i for i,v in vs.items() if v["scheduler_active"]]
        return (act[0], vs[act[0]]["node_id"]==vs[act[0]]["leader_id"]) if len(act)==1 else None
    h, is_leader = wait(holder)
    procs[h].kill(); procs[h].wait(); t0=time.time()
    others=[i for i in procs if i!=h]
    def taken():
        for i in others:
            v=info(i)
            if v and v["scheduler_active"]: return i
        return None
    wait(taken); dt=time.time()-t0
    results.append((round(dt,2), "leader" if is_leader else "follower"))
    print(f"trial {trial}: holder n{h} ({'leader' if is_leader else 'follower'}) killed -> taken over in {dt:.2f}s", flush=True)
    start(h); wait(lambda: info(h)); wait(lambda: all(info(i) and info(i)["applied"]==info(others[0])["applied"] for i in procs) or None)
for p in procs.values(): p.kill()
for kind in ("leader", "follower"):
    ts = sorted(t for t, k in results if k == kind)
    if ts:
        print(f"holder was {kind}: n={len(ts)} p50={ts[len(ts)//2]:.2f}s max={ts[-1]:.2f}s")

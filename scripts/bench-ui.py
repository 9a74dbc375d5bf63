#!/usr/bin/env python3
"""BENCHMARKS.md "Web page" (issue 15): how long the runs page of a server holding N runs
takes to show its first page in headless Chromium.

A one-node `cairn serve` is filled by import with N finished, archived runs (the
generator of scripts/bench-archive.py), then Debian's chromedriver drives headless
Chromium: the token goes into sessionStorage, the page is loaded at `#/runs` R times,
and each load reports, from the browser's own clock, the time from navigation start to
the first run row in the DOM (fetching the page, its modules and `GET /runs` included).

Usage: scripts/bench-ui.py [N ...]   (default: 100000). CAIRN_BIN: the binary (default
target/release/cairn, else target/debug/cairn); needs `chromium` and `chromium-driver`.
"""
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_archive", os.path.join(HERE, "bench-archive.py"))
ba = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ba)
if "CAIRN_BIN" not in os.environ and not os.path.exists(ba.BIN):
    ba.BIN = os.path.join(HERE, "..", "target", "debug", "cairn")
LOADS = 10


def wd(base, method, path, body=None):
    data = json.dumps(body or {}).encode() if method == "POST" else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["value"]


def signed_in_browser(url):
    """A chromedriver on a free port and a headless Chromium session in it, holding the
    bench's token in the page's sessionStorage at `url`: (driver process, base, session)."""
    port = ba.free_port()
    driver = subprocess.Popen(["chromedriver", "--port=%d" % port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = "http://127.0.0.1:%d" % port
    for _ in range(300):
        try:
            wd(base, "GET", "/status")
            break
        except OSError:
            time.sleep(0.05)
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900"]}}}}
    sid = wd(base, "POST", "/session", caps)["sessionId"]
    wd(base, "POST", "/session/%s/url" % sid, {"url": url + "/"})
    wd(base, "POST", "/session/%s/execute/sync" % sid, {
        "script": "sessionStorage.setItem(arguments[0], arguments[1]);",
        "args": [token_key(), ba.TOKEN]})
    return driver, base, sid


def first_page_ms(base, sid, url):
    wd(base, "POST", "/session/%s/url" % sid, {"url": url + "/#/runs"})
    script = """
        const done = arguments[arguments.length - 1];
        const t = () => document.querySelector('[data-testid=run-row]')
            ? done(performance.now()) : setTimeout(t, 5);
        t();"""
    return wd(base, "POST", "/session/%s/execute/async" % sid, {"script": script, "args": []})


def bench(n):
    work = tempfile.mkdtemp(prefix="cairn-bench-ui-")
    node = ba.Node(work, 0, os.path.join(work, "objects"))
    driver = None
    try:
        export = os.path.join(work, "in.ndjson")
        ba.generate(export, n)
        server = ["--server", node.url]
        ba.cli("maintenance", "on", *server)
        for _ in range(200):
            if ": maintenance" in ba.cli("maintenance", "status", *server):
                break
            time.sleep(0.05)
        ba.cli("import", export, *server)
        ba.cli("maintenance", "off", *server)
        ba.wait_indexed(node, "%016d" % n, time.monotonic())
        driver, base, sid = signed_in_browser(node.url)
        times = []
        for _ in range(LOADS):
            # A fresh document each time (the same hash would not reload).
            wd(base, "POST", "/session/%s/url" % sid, {"url": node.url + "/ui/favicon.svg"})
            times.append(first_page_ms(base, sid, node.url))
        rows = wd(base, "POST", "/session/%s/execute/sync" % sid, {
            "script": "return document.querySelectorAll('[data-testid=run-row]').length;", "args": []})
        wd(base, "DELETE", "/session/%s" % sid)
        print("| %d | %d | %.0f | %.0f | %.0f | %d |" % (
            n, LOADS, statistics.median(times), min(times), max(times), rows))
    finally:
        if driver:
            driver.kill()
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


def token_key():
    """The sessionStorage key the page keeps its token under (ui/api.js)."""
    src = open(os.path.join(HERE, "..", "ui", "api.js")).read()
    marker = "sessionStorage.getItem("
    i = src.index(marker) + len(marker)
    arg = src[i:src.index(")", i)].strip()
    if arg[0] in "\"'":
        return arg[1:-1]
    # A constant: find its definition.
    j = src.index("const %s" % arg)
    return src[src.index('"', j) + 1:src.index('"', src.index('"', j) + 1)]


def main():
    print("| runs in the server | loads | first page p50 ms | min ms | max ms | rows shown |")
    print("|---|---|---|---|---|---|")
    for n in [int(a) for a in sys.argv[1:]] or [100000]:
        bench(n)


if __name__ == "__main__":
    main()

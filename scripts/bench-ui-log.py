#!/usr/bin/env python3
"""BENCHMARKS.md "Web page" (issue 15): the memory of a browser tab following a big step
log. A one-node `cairn serve` with its local executor runs one step that prints SIZE MiB
of numbered lines; headless Chromium (Debian's chromedriver) opens that step's log view
while it runs and follows it to the last line. Every second the proportional set size of
Chromium's renderer processes (`--type=renderer`: the tab, and any spare renderer) is
sampled from /proc, and the page's JS heap (`performance.memory`); the peaks are reported
with the time the view took to show the last line.

Usage: scripts/bench-ui-log.py [SIZE_MIB]   (default 200). CAIRN_BIN as in bench-ui.py.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_ui", os.path.join(HERE, "bench-ui.py"))
bu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bu)
ba, wd = bu.ba, bu.wd
LINE = 100  # bytes per line, newline included


def renderer_pss_mib():
    """The proportional set size of Chromium's renderer processes (shared pages split
    between the processes that map them, so the browser's shared libraries do not count
    once per process)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read()
            if b"chromium" not in cmd or b"--type=renderer" not in cmd:
                continue
            for line in open("/proc/%s/smaps_rollup" % pid):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024.0


def api(node, method, path, body=None):
    req = urllib.request.Request(node.url + "/api/v1" + path, method=method,
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": "Bearer " + ba.TOKEN,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    lines = size * (1 << 20) // LINE
    work = tempfile.mkdtemp(prefix="cairn-bench-ui-log-")
    port = ba.free_port()
    url = "http://127.0.0.1:%d" % port
    log = open(os.path.join(work, "serve.log"), "w")
    serve = subprocess.Popen([ba.BIN, "serve", "--token", ba.TOKEN, "--data-dir", os.path.join(work, "n"),
                              "--listen", "127.0.0.1:%d" % port, "--driver", "local"],
                             stdout=subprocess.PIPE, stderr=log, text=True)
    for line in serve.stdout:
        if "serving on" in line:
            break
    node = type("N", (), {"url": url})()
    driver = None
    try:
        # Each line: its number, padded with dots to LINE bytes.
        cmd = "seq -f \"%%0%dg\" 1 %d | sed \"s/$/%s/\"" % (10, lines, "." * (LINE - 11))
        config = ("runs:\n  - name: ci\n    tasks:\n      - name: big\n"
                  "        runtime: { containers: [ { image: busybox } ] }\n"
                  "        steps:\n          - run: '%s'\n" % cmd.replace("'", "''"))
        made = api(node, "POST", "/runs", {"group": "/project/p/branch/main",
                                           "config": {"path": ".agola/config.yml", "content": config},
                                           "reference": {"branch": "main"}})
        run = made["runs"][0]
        rid = run["run"]["id"]
        tid = next(iter(run["run_config"]["tasks"]))
        driver, base, sid = bu.signed_in_browser(url)
        wd(base, "POST", "/session/%s/url" % sid, {"url": "%s/#/runs/%s/tasks/%s?step=0" % (url, rid, tid)})
        last = "%010d" % lines
        t0 = time.monotonic()
        peak = 0.0
        heap = 0.0
        shown = None
        while time.monotonic() - t0 < 1800:
            peak = max(peak, renderer_pss_mib())
            heap = max(heap, wd(base, "POST", "/session/%s/execute/sync" % sid, {
                "script": "return performance.memory ? performance.memory.usedJSHeapSize : 0;",
                "args": []}) / 1048576.0)
            text = wd(base, "POST", "/session/%s/execute/sync" % sid, {
                "script": "const v = document.querySelector('#log-view'); return v ? v.innerText : '';",
                "args": []})
            if last in text:
                shown = time.monotonic() - t0
                break
            time.sleep(1)
        in_dom = wd(base, "POST", "/session/%s/execute/sync" % sid, {
            "script": "return document.querySelectorAll('#log-view .log-line').length;", "args": []})
        wd(base, "DELETE", "/session/%s" % sid)
        print("| log MiB | lines | last line shown after s | renderers' peak PSS MiB | page's peak JS heap MiB | lines in DOM |")
        print("|---|---|---|---|---|---|")
        print("| %d | %d | %s | %.0f | %.0f | %d |" % (size, lines, "%.0f" % shown if shown else "not within 1800",
                                                     peak, heap, in_dom))
    finally:
        if driver:
            driver.kill()
        serve.kill()
        serve.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

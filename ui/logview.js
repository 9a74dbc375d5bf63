// A step's log, live and virtualised. The view keeps:
// - the byte offset where each line starts (a Float64Array, 8 bytes a line), built as the
//   log streams in, so any line can be found without the text;
// - the log's bytes in 1 MiB blocks, at most MAX_BLOCKS of them (the block being written
//   is always kept); an evicted block is read again by range (`offset=`, the body cut
//   once the block is read) when its lines are scrolled into view;
// - in the DOM, only the lines in the visible window (a spacer gives the scrollbar its
//   length; past MAX_PX pixels the scroll position maps proportionally onto lines).
// It follows from the offset it has reached (`follow=true`) and resumes from there after
// a cut or a reconnect, until the server says the log is complete.

import { raw, pause, ApiError } from "./api.js";
import { h } from "./dom.js";
import { renderAnsi } from "./ansi.js";

const BLOCK = 1 << 20;
const MAX_BLOCKS = 32;
/** The height of a line in pixels: `.log-line` in style.css has the same. */
const LINE_H = 18;
const MAX_PX = 8000000;
const OVERSCAN = 10;
/** Bytes of a line rendered at most (the rest is cut with a marker). */
const MAX_LINE_BYTES = 16384;

const decoder = new TextDecoder("utf-8");

export class LogView {
  /**
   * `pathFor(offset, follow)`: the API path of the log from `offset`; `fileName`: the
   * name of the raw download.
   */
  constructor({ pathFor, fileName, label }) {
    this.pathFor = pathFor;
    this.fileName = fileName;
    this.length = 0;
    this.starts = new Float64Array(4096);
    this.count = 1; // starts[0] = 0: the first line starts at byte 0
    this.blocks = new Map();
    this.loading = new Set();
    this.sticky = true;
    this.complete = false;
    this.frame = 0;
    this.abort = new AbortController();

    this.status = h("span", { class: "log-status", role: "status", id: "log-status", dataset: { testid: "log-status" } }, "connecting…");
    this.jump = h("button", { type: "button", id: "log-jump-end", dataset: { testid: "log-jump-end" }, onclick: () => this.jumpToEnd() }, "Jump to end");
    this.download = h("button", { type: "button", id: "log-download", dataset: { testid: "log-download" }, onclick: () => this.downloadRaw() }, "Download raw");
    this.spacer = h("div", { class: "log-spacer" });
    this.window = h("div", { class: "log-window" });
    this.viewport = h(
      "div",
      { class: "log", id: "log-view", dataset: { testid: "log-view" }, tabindex: "0", role: "region", "aria-label": label || "Log" },
      this.spacer,
      this.window,
    );
    this.el = h("section", { class: "logbox", "aria-label": label || "Log" }, h("div", { class: "log-tools" }, this.status, this.jump, this.download), this.viewport);
    this.viewport.addEventListener("scroll", () => this.onScroll(), { passive: true });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.viewport);
    this.follow();
  }

  /** Stops following and drops everything. */
  destroy() {
    this.abort.abort();
    this.resize.disconnect();
    if (this.frame) cancelAnimationFrame(this.frame);
    this.blocks.clear();
  }

  get lineCount() {
    const lastStart = this.starts[this.count - 1];
    return this.length > lastStart ? this.count : this.count - 1;
  }

  setStatus(text) {
    this.status.textContent = text;
  }

  summary() {
    const n = this.lineCount;
    return `${n.toLocaleString()} line${n === 1 ? "" : "s"}, ${formatBytes(this.length)}`;
  }

  async follow() {
    const signal = this.abort.signal;
    let backoff = 500;
    while (!signal.aborted) {
      try {
        const resp = await raw(this.pathFor(this.length, true), { signal });
        const complete = resp.headers.get("x-cairn-log-complete") === "true";
        this.setStatus(complete ? `loading… ${this.summary()}` : `following… ${this.summary()}`);
        const reader = resp.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          this.append(value);
        }
        if (complete) {
          this.complete = true;
          this.setStatus(`complete: ${this.summary()}`);
          this.schedule();
          return;
        }
        backoff = 500;
        this.setStatus(`following… ${this.summary()}`);
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
          this.setStatus(`cannot read the log: ${e.message}`);
          return;
        }
        if (e instanceof ApiError && e.status === 404) {
          this.setStatus("no log yet: waiting for the step…");
        } else {
          this.setStatus(`reconnecting (${e.message}); ${this.summary()}`);
        }
        backoff = Math.min(backoff * 2, 10000);
      }
      await pause(backoff, signal);
    }
  }

  /** Adds bytes at the end: into the blocks, and the line starts they hold. */
  append(bytes) {
    let pos = 0;
    const base = this.length;
    for (let nl = bytes.indexOf(10); nl >= 0; nl = bytes.indexOf(10, nl + 1)) {
      this.pushStart(base + nl + 1);
    }
    while (pos < bytes.length) {
      const off = base + pos;
      const bi = Math.floor(off / BLOCK);
      const at = off - bi * BLOCK;
      let blk = this.blocks.get(bi);
      if (!blk) {
        blk = new Uint8Array(BLOCK);
        this.blocks.set(bi, blk);
      }
      const n = Math.min(BLOCK - at, bytes.length - pos);
      blk.set(bytes.subarray(pos, pos + n), at);
      pos += n;
    }
    this.length = base + bytes.length;
    this.evict();
    if (!this.complete) this.setStatus(`following… ${this.summary()}`);
    this.schedule();
  }

  pushStart(offset) {
    if (this.count === this.starts.length) {
      const grown = new Float64Array(this.starts.length * 2);
      grown.set(this.starts);
      this.starts = grown;
    }
    this.starts[this.count++] = offset;
  }

  evict() {
    const tail = Math.floor(this.length / BLOCK);
    for (const bi of this.blocks.keys()) {
      if (this.blocks.size <= MAX_BLOCKS) break;
      if (bi !== tail) this.blocks.delete(bi);
    }
  }

  /** The block `bi`, marked as recently used; `null` (and a read started) when evicted. */
  block(bi) {
    const blk = this.blocks.get(bi);
    if (blk) {
      this.blocks.delete(bi);
      this.blocks.set(bi, blk);
      return blk;
    }
    this.load(bi);
    return null;
  }

  /** Reads an evicted (so full) block again: the log from its start, cut after it. */
  async load(bi) {
    if (this.loading.has(bi)) return;
    this.loading.add(bi);
    const signal = this.abort.signal;
    try {
      const resp = await raw(this.pathFor(bi * BLOCK, false), { signal });
      const reader = resp.body.getReader();
      const blk = new Uint8Array(BLOCK);
      let got = 0;
      while (got < BLOCK) {
        const { value, done } = await reader.read();
        if (done) break;
        const n = Math.min(value.length, BLOCK - got);
        blk.set(value.subarray(0, n), got);
        got += n;
      }
      reader.cancel().catch(() => {});
      this.blocks.set(bi, blk);
      this.evict();
      this.schedule();
    } catch (e) {
      if (!signal.aborted) this.setStatus(`cannot read part of the log: ${e.message}`);
    } finally {
      this.loading.delete(bi);
    }
  }

  /** The text of line `i`, or `null` while its bytes are being read. */
  line(i) {
    const a = this.starts[i];
    let b = i + 1 < this.count ? this.starts[i + 1] - 1 : this.length;
    let cut = false;
    if (b - a > MAX_LINE_BYTES) {
      b = a + MAX_LINE_BYTES;
      cut = true;
    }
    const out = new Uint8Array(b - a);
    let off = a;
    while (off < b) {
      const bi = Math.floor(off / BLOCK);
      const blk = this.block(bi);
      if (!blk) return null;
      const at = off - bi * BLOCK;
      const n = Math.min(BLOCK - at, b - off);
      out.set(blk.subarray(at, at + n), off - a);
      off += n;
    }
    const text = decoder.decode(out);
    return cut ? `${text} … [line cut at ${MAX_LINE_BYTES} bytes]` : text;
  }

  onScroll() {
    const v = this.viewport;
    this.sticky = v.scrollTop + v.clientHeight >= v.scrollHeight - LINE_H * 2;
    this.schedule();
  }

  jumpToEnd() {
    this.sticky = true;
    this.render();
    this.viewport.focus();
  }

  schedule() {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  render() {
    const v = this.viewport;
    const n = this.lineCount;
    const total = n * LINE_H;
    const scaled = total > MAX_PX;
    this.spacer.style.height = `${scaled ? MAX_PX : total}px`;
    if (this.sticky) v.scrollTop = v.scrollHeight;
    const viewH = v.clientHeight || 400;
    const visible = Math.ceil(viewH / LINE_H) + 1;
    let first;
    let top;
    if (!scaled) {
      first = Math.floor(v.scrollTop / LINE_H);
      top = first * LINE_H;
    } else {
      const frac = Math.min(1, v.scrollTop / Math.max(1, MAX_PX - viewH));
      first = Math.round(frac * Math.max(0, n - visible + 1));
      top = v.scrollTop;
    }
    first = Math.max(0, Math.min(first, Math.max(0, n - 1)));
    const from = scaled ? first : Math.max(0, first - OVERSCAN);
    const to = Math.min(n, first + visible + OVERSCAN);
    if (!scaled) top = from * LINE_H;
    this.window.style.transform = `translateY(${top}px)`;
    const rows = [];
    for (let i = from; i < to; i++) {
      const text = this.line(i);
      rows.push(
        h(
          "div",
          { class: "log-line", dataset: { line: String(i + 1) } },
          h("span", { class: "ln", "aria-hidden": "true" }, String(i + 1)),
          text === null ? h("span", { class: "log-loading" }, "…") : h("span", { class: "lt" }, renderAnsi(text)),
        ),
      );
    }
    this.window.replaceChildren(...rows);
  }

  async downloadRaw() {
    try {
      this.download.disabled = true;
      const resp = await raw(this.pathFor(0, false), { signal: this.abort.signal });
      const url = URL.createObjectURL(await resp.blob());
      const a = h("a", { href: url, download: this.fileName });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (e) {
      this.setStatus(`download failed: ${e.message}`);
    } finally {
      this.download.disabled = false;
    }
  }
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / (1 << 30)).toFixed(2)} GiB`;
}

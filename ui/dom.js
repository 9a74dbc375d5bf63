// Small DOM helpers shared by the views: element building (text only, never HTML
// strings, so nothing from the API is parsed as markup), times and durations.

/**
 * `h("a", {href, class: "x", dataset: {testid: "y"}, onclick}, ...children)`; children
 * are nodes or strings (text), arrays are flattened, null/false skipped.
 */
export function h(tag, attrs, ...children) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A date as local time, or "—". */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** A `<time>` element of `iso`. */
export function timeEl(iso) {
  return iso ? h("time", { datetime: iso }, when(iso)) : "—";
}

/** The duration between two times (the second defaults to now), as "1h 2m 3s". */
export function duration(start, end) {
  if (!start) return "";
  const ms = (end ? new Date(end) : new Date()) - new Date(start);
  if (!(ms >= 0)) return "";
  let s = Math.round(ms / 1000);
  const hrs = Math.floor(s / 3600);
  s -= hrs * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (hrs) return `${hrs}h ${m}m ${s}s`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

/** How long ago `iso` was. */
export function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - new Date(iso)) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

/** A status badge: `kind` picks the colour class (a run phase/result or a task status). */
export function badge(text, kind, testid) {
  return h("span", { class: `badge st-${kind || text}`, dataset: testid ? { testid } : undefined }, text);
}

/** The state of a run in one word: its result once finished, else its phase. */
export function runState(run) {
  if (run.phase === "finished") return run.result || "unknown";
  if (run.phase === "running" && run.stop) return "stopping";
  return run.phase;
}

/** An error message block. */
export function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e && e.message ? e.message : String(e));
}

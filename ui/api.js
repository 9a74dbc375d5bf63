// The API client of the page: the token (session storage only, sent as a bearer header,
// never in a URL), JSON calls with the API's error shape, and a fetch-based reader of
// server-sent events (EventSource cannot send an Authorization header).

const TOKEN_KEY = "cairn.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A failed call: the HTTP status and the API's `{code, message, details}`. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.details = body && body.details;
  }
}

/** Handlers are told when the token stops working (a 401), to show the sign-in form. */
const unauthorizedListeners = new Set();
export function onUnauthorized(f) {
  unauthorizedListeners.add(f);
}

function headers(extra) {
  const h = new Headers(extra || {});
  const t = token();
  if (t) h.set("Authorization", `Bearer ${t}`);
  return h;
}

/** `fetch` of an API path with the bearer token; throws `ApiError` on a non-2xx. */
export async function raw(path, opts = {}) {
  const resp = await fetch(path, { ...opts, headers: headers(opts.headers), cache: "no-store" });
  if (!resp.ok) {
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    const err = new ApiError(resp.status, body);
    if (resp.status === 401) unauthorizedListeners.forEach((f) => f(err));
    throw err;
  }
  return resp;
}

/** A JSON call: `GET` unless `method` says otherwise; `body` is sent as JSON. */
export async function call(path, { method = "GET", body, signal } = {}) {
  const opts = { method, signal };
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers = { "Content-Type": "application/json" };
  }
  const resp = await raw(path, opts);
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** `path?k=v&…` without the empty values. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "" && v !== false) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** Whether the token may act on runs (`GET /whoami`). */
export async function canAct() {
  const me = await call("/api/v1/whoami");
  return Boolean(me && me.can_act);
}

/**
 * Reads one server-sent event stream of `path` until it ends; `onEvent({id, data})` for
 * each event. Throws `ApiError` when the stream cannot open, an AbortError when aborted.
 */
export async function readSse(path, { onEvent, onOpen, signal, lastEventId }) {
  const h = {};
  if (lastEventId !== undefined && lastEventId !== null) h["Last-Event-ID"] = String(lastEventId);
  h.Accept = "text/event-stream";
  const resp = await raw(path, { signal, headers: h });
  if (onOpen) onOpen();
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let ev = { id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (ev.data.length) onEvent({ id: ev.id, data: ev.data.join("\n") });
        ev = { id: null, data: [] };
      } else if (line.startsWith(":")) {
        // A keep-alive comment.
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "data") ev.data.push(v);
        else if (field === "id") ev.id = v;
      }
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function pause(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/**
 * Keeps an SSE stream open: reopens it after it ends or fails (1 s, doubling to 15 s),
 * until `signal` aborts or `stop()` (given to `onEvent`'s caller as the return of
 * `shouldReopen`) says the stream is done. `pathFor()` is asked for the path each time,
 * so that a resume point can go in it. `onStatus(text)` reports the connection's state.
 */
export async function keepSse({ pathFor, onEvent, onStatus, shouldReopen, signal }) {
  let backoff = 1000;
  while (!signal.aborted) {
    try {
      await readSse(pathFor(), {
        onEvent,
        signal,
        onOpen: () => {
          backoff = 1000;
          if (onStatus) onStatus("live");
        },
      });
      if (shouldReopen && !shouldReopen()) return;
      if (onStatus) onStatus("reconnecting");
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 404)) {
        if (onStatus) onStatus(`stopped: ${e.message}`);
        return;
      }
      if (onStatus) onStatus(`reconnecting (${e.message})`);
    }
    await pause(backoff, signal);
    backoff = Math.min(backoff * 2, 15000);
  }
}

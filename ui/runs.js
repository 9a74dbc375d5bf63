// The runs view: newest first, filtered by group (a tree of the groups seen), phase and
// result, paged with the API's cursors, kept live from the run-event stream.

import { call, keepSse, withQuery } from "./api.js";
import { h, fill, badge, runState, timeEl, duration, errorBox } from "./dom.js";

const PHASES = ["", "setuperror", "queued", "running", "finished", "cancelled"];
const RESULTS = ["", "unknown", "success", "failed", "stopped"];
const PAGE = 25;

/** The cursors of the pages before the current one, per filter (for "Newer"). */
const trail = { key: "", cursors: [] };

export function runsView(root, params, ctx) {
  const filter = {
    group: params.get("group") || "",
    phase: params.get("phase") || "",
    result: params.get("result") || "",
  };
  const cursor = params.get("cursor") || "";
  const key = JSON.stringify(filter);
  if (trail.key !== key) Object.assign(trail, { key, cursors: [] });
  if (!cursor) trail.cursors = [];

  const rows = new Map();
  const groups = new Set();
  const tbody = h("tbody", {});
  const status = h("p", { class: "muted", role: "status", id: "runs-status" }, "loading…");
  const live = h("span", { class: "live", id: "runs-live", dataset: { testid: "runs-live" } }, "");
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const groupList = h("datalist", { id: "groups-seen" });
  const tree = h("nav", { class: "group-tree", "aria-label": "Groups" });

  const form = h(
    "form",
    { class: "filters", id: "runs-filter", role: "search", onsubmit: (e) => { e.preventDefault(); go(readForm(), ""); } },
    h("label", {}, "Group ", h("input", { id: "filter-group", name: "group", value: filter.group, list: "groups-seen", placeholder: "/project/…", size: 28 })),
    h("label", {}, "Phase ", select("filter-phase", "phase", PHASES, filter.phase)),
    h("label", {}, "Result ", select("filter-result", "result", RESULTS, filter.result)),
    h("button", { type: "submit", id: "filter-apply" }, "Filter"),
    h("button", { type: "button", id: "filter-clear", onclick: () => go({ group: "", phase: "", result: "" }, "") }, "Clear"),
    groupList,
  );

  function readForm() {
    const d = new FormData(form);
    return { group: d.get("group").trim(), phase: d.get("phase"), result: d.get("result") };
  }

  function go(f, c) {
    location.hash = withQuery("#/runs", { ...f, cursor: c });
  }

  fill(
    root,
    h("div", { class: "view-head" }, h("h1", {}, "Runs"), live),
    form,
    h(
      "div",
      { class: "runs-layout" },
      h("aside", {}, h("h2", { class: "small" }, "Groups"), tree),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "runs", id: "runs-table", dataset: { testid: "runs-table" } },
          h("caption", { class: "sr-only" }, "Runs, newest first"),
          h("thead", {}, h("tr", {}, ["Run", "Group", "State", "Started", "Duration"].map((c) => h("th", { scope: "col" }, c)))),
          tbody,
        ),
        status,
        pager,
      ),
    ),
  );

  function row(run) {
    const state = runState(run);
    const tr = h(
      "tr",
      { dataset: { testid: "run-row", runId: run.id, state } },
      h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.id)}`, class: "run-link" }, `#${run.counter} ${run.name}`)),
      h("td", { class: "group" }, run.group),
      h("td", {}, badge(state, state, "run-state")),
      h("td", {}, timeEl(run.start_time || run.enqueue_time)),
      h("td", {}, duration(run.start_time, run.end_time)),
    );
    return tr;
  }

  function addGroups(list) {
    for (const r of list) {
      const parts = r.group.split("/").filter(Boolean);
      for (let i = 1; i <= parts.length; i++) groups.add(`/${parts.slice(0, i).join("/")}`);
    }
    fill(groupList, [...groups].sort().map((g) => h("option", { value: g })));
    fill(tree, groupTree([...groups].sort(), filter.group));
  }

  async function load() {
    try {
      const page = await call(withQuery("/api/v1/runs", { ...filter, cursor, limit: PAGE }), { signal: ctx.signal });
      rows.clear();
      fill(tbody, page.runs.map((r) => {
        const tr = row(r);
        rows.set(r.id, tr);
        return tr;
      }));
      addGroups(page.runs);
      fill(status, page.runs.length ? "" : "No runs.");
      fill(
        pager,
        cursor ? h("button", { type: "button", id: "page-newer", onclick: () => go(filter, trail.cursors.pop() || "") }, "← Newer") : null,
        cursor ? h("button", { type: "button", id: "page-first", onclick: () => go(filter, "") }, "Newest") : null,
        page.next
          ? h("button", { type: "button", id: "page-older", onclick: () => { trail.cursors.push(cursor); go(filter, page.next); } }, "Older →")
          : null,
      );
    } catch (e) {
      if (!ctx.signal.aborted) fill(status, errorBox(e));
    }
  }

  // Live: a changed run on the page is read again; a new run matching the filter
  // reloads the first page (at most twice a second).
  let reloadTimer = 0;
  let lastSeq = null;
  const refreshing = new Set();
  function matches(ev) {
    const g = filter.group.replace(/\/+$/, "");
    if (g && ev.group !== g && !ev.group.startsWith(`${g}/`)) return false;
    if (filter.phase && !filter.phase.split(",").includes(ev.phase)) return false;
    if (filter.result && !filter.result.split(",").includes(ev.result)) return false;
    return true;
  }
  async function refreshRow(id) {
    if (refreshing.has(id)) return;
    refreshing.add(id);
    try {
      const resp = await call(`/api/v1/runs/${encodeURIComponent(id)}`, { signal: ctx.signal });
      const old = rows.get(id);
      if (old && old.isConnected) {
        const tr = row(resp.run);
        old.replaceWith(tr);
        rows.set(id, tr);
      }
    } catch (_) {
      // The row stays as it was; the next event tries again.
    } finally {
      refreshing.delete(id);
    }
  }
  function onEvent({ id, data }) {
    if (id) lastSeq = id;
    let ev;
    try {
      ev = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (rows.has(ev.run_id)) refreshRow(ev.run_id);
    else if (!cursor && matches(ev) && !reloadTimer) {
      reloadTimer = setTimeout(() => {
        reloadTimer = 0;
        load();
      }, 500);
    }
  }
  keepSse({
    pathFor: () => withQuery("/api/v1/runs/events", { after: lastSeq }),
    onEvent,
    onStatus: (s) => { live.textContent = s === "live" ? "● live" : s; },
    signal: ctx.signal,
  });
  ctx.signal.addEventListener("abort", () => clearTimeout(reloadTimer));
  load();
}

function select(id, name, options, value) {
  return h("select", { id, name }, options.map((o) => h("option", { value: o, selected: o === value }, o || "any")));
}

/** Nested lists of group paths, each a link that filters by it. */
function groupTree(paths, current) {
  const root = { children: new Map() };
  for (const p of paths) {
    let node = root;
    for (const part of p.split("/").filter(Boolean)) {
      if (!node.children.has(part)) node.children.set(part, { path: `${node.path || ""}/${part}`, children: new Map() });
      node = node.children.get(part);
    }
  }
  const list = (node) =>
    node.children.size
      ? h(
          "ul",
          {},
          [...node.children.entries()].map(([name, child]) =>
            h(
              "li",
              {},
              h("a", { href: withQuery("#/runs", { group: child.path }), "aria-current": child.path === current ? "true" : null }, name),
              list(child),
            ),
          ),
        )
      : null;
  return [h("a", { href: "#/runs", "aria-current": current ? null : "true" }, "all"), list(root)];
}

// The task graph of a run as SVG: one column per level, tasks in a column by name, an
// edge from each parent to its child labelled with the dependency's conditions, each
// task a link to its page with its status, duration and pending reason.

import { h, duration } from "./dom.js";

const W = 210;
const H = 58;
const GAP_X = 96;
const GAP_Y = 20;
const PAD = 12;

function s(tag, attrs, ...children) {
  return h(`svg:${tag}`, attrs, ...children);
}

const SHORT = { on_success: "success", on_failure: "failure", on_skipped: "skipped" };

/** The SVG of `resp` (a `RunResponse`); tasks link to `hrefOf(taskId)`. */
export function taskGraph(resp, hrefOf) {
  const cfgTasks = resp.run_config.tasks || {};
  const runTasks = resp.run.tasks || {};
  const pending = (resp.pending && resp.pending.tasks) || {};
  const columns = new Map();
  for (const t of Object.values(cfgTasks)) {
    const level = t.level || 0;
    if (!columns.has(level)) columns.set(level, []);
    columns.get(level).push(t);
  }
  const levels = [...columns.keys()].sort((a, b) => a - b);
  const pos = new Map();
  let rows = 0;
  levels.forEach((level, col) => {
    const list = columns.get(level).sort((a, b) => a.name.localeCompare(b.name));
    list.forEach((t, row) => pos.set(t.id, { x: PAD + col * (W + GAP_X), y: PAD + row * (H + GAP_Y) }));
    rows = Math.max(rows, list.length);
  });
  const width = PAD * 2 + Math.max(1, levels.length) * (W + GAP_X) - GAP_X;
  const height = PAD * 2 + Math.max(1, rows) * (H + GAP_Y) - GAP_Y;

  const edges = s("g", { class: "edges" });
  const labels = s("g", { class: "edge-labels" });
  for (const t of Object.values(cfgTasks)) {
    const to = pos.get(t.id);
    for (const [parentId, dep] of Object.entries(t.depends || {})) {
      const from = pos.get(dep.task_id || parentId);
      if (!from || !to) continue;
      const conds = (dep.conditions || []).length ? dep.conditions : ["on_success"];
      const x1 = from.x + W;
      const y1 = from.y + H / 2;
      const x2 = to.x;
      const y2 = to.y + H / 2;
      const mx = (x1 + x2) / 2;
      const kind = conds.length === 1 ? conds[0] : "mixed";
      edges.append(
        s("path", {
          d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 6},${y2}`,
          class: `edge cond-${kind}`,
          "marker-end": "url(#arrow)",
          dataset: { testid: "task-edge", from: dep.task_id || parentId, to: t.id },
        }),
      );
      const text = conds.map((c) => SHORT[c] || c).join(" | ");
      const lx = x1 + (x2 - x1) * 0.62;
      const ly = y1 + (y2 - y1) * 0.62 - 4;
      labels.append(s("text", { x: lx, y: ly, class: `edge-label cond-${kind}`, "text-anchor": "middle" }, text));
    }
  }

  const nodes = s("g", { class: "nodes" });
  for (const t of Object.values(cfgTasks)) {
    const p = pos.get(t.id);
    const rt = runTasks[t.id] || { status: "notstarted" };
    const status = rt.waiting_approval && !rt.approved ? "waiting approval" : rt.status;
    const dur = duration(rt.start_time, rt.end_time);
    const reason = pending[t.name];
    const detail = reason ? reason : dur ? `${status} · ${dur}` : status;
    const label = `${t.name}: ${status}${dur ? `, ${dur}` : ""}${reason ? `, ${reason}` : ""}`;
    nodes.append(
      s(
        "a",
        {
          href: hrefOf(t.id),
          class: `task-node st-${rt.waiting_approval && !rt.approved ? "waiting" : rt.status}`,
          "aria-label": label,
          dataset: { testid: "task-node", taskId: t.id, taskName: t.name, status: rt.status },
        },
        s("title", {}, label),
        s("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6 }),
        s("rect", { x: p.x, y: p.y, width: 6, height: H, class: "status-bar" }),
        s("text", { x: p.x + 16, y: p.y + 23, class: "task-name" }, clip(t.name, 24)),
        s("text", { x: p.x + 16, y: p.y + 44, class: "task-detail" }, clip(detail, 30)),
      ),
    );
  }

  const defs = s(
    "defs",
    {},
    s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" })),
  );
  return s(
    "svg",
    { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "group", "aria-label": "Task graph", dataset: { testid: "task-graph" } },
    defs,
    edges,
    labels,
    nodes,
  );
}

function clip(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

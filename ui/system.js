// The executors view (labels, architectures, load, last heartbeat) and the cluster view
// (this node, its peers, the leader, whether its scheduler is active, maintenance),
// polled every 5 s while shown.

import { call, pause } from "./api.js";
import { h, fill, ago, timeEl, errorBox } from "./dom.js";

async function poll(signal, f) {
  while (!signal.aborted) {
    await f();
    await pause(5000, signal);
  }
}

export function executorsView(root, ctx) {
  const body = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "loading…"));
  fill(root, h("h1", {}, "Executors"), body);
  poll(ctx.signal, async () => {
    try {
      const r = await call("/api/v1/executors", { signal: ctx.signal });
      const assigned = r.assigned || {};
      fill(
        body,
        r.executors.length
          ? h(
              "table",
              { id: "executors-table" },
              h("caption", { class: "sr-only" }, "Registered executors"),
              h("thead", {}, h("tr", {}, ["Executor", "Labels", "Archs", "Load", "Assigned", "Privileged", "Last heartbeat"].map((c) => h("th", { scope: "col" }, c)))),
              h(
                "tbody",
                {},
                r.executors.map((e) =>
                  h(
                    "tr",
                    { dataset: { testid: "executor-row", executorId: e.id } },
                    h("td", { class: "mono" }, e.id),
                    h("td", {}, Object.entries(e.labels || {}).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`))),
                    h("td", {}, (e.archs || []).join(", ")),
                    h("td", {}, load(e.active_tasks || 0, e.active_tasks_limit || 0)),
                    h("td", {}, String(assigned[e.id] || 0)),
                    h("td", {}, e.allow_privileged ? "yes" : "no"),
                    h("td", {}, e.last_heartbeat ? [timeEl(e.last_heartbeat), h("span", { class: "muted" }, ` (${ago(e.last_heartbeat)})`)] : "never"),
                  ),
                ),
              ),
            )
          : h("p", {}, "No executor is registered."),
      );
    } catch (e) {
      if (!ctx.signal.aborted) fill(body, errorBox(e));
    }
  });
}

function load(active, limit) {
  const text = limit ? `${active} / ${limit}` : String(active);
  if (!limit) return text;
  return [h("meter", { min: 0, max: limit, value: active, "aria-label": `load ${text}` }), ` ${text}`];
}

export function clusterView(root, ctx) {
  const body = h("div", {}, h("p", { class: "muted" }, "loading…"));
  fill(root, h("h1", {}, "Cluster"), body);
  poll(ctx.signal, async () => {
    try {
      const [n, m] = await Promise.all([
        call("/api/v1/cluster", { signal: ctx.signal }),
        call("/api/v1/maintenance", { signal: ctx.signal }).catch(() => null),
      ]);
      const members = [...(n.voters || []).map((v) => ({ ...v, kind: "voter" })), ...(n.learners || []).map((v) => ({ ...v, kind: "learner" }))];
      fill(
        body,
        h(
          "dl",
          { class: "facts", id: "cluster-facts" },
          fact("Answering node", `${n.node_id} (${n.addr || ""})`),
          fact("Its state", n.state || ""),
          fact("Leader", n.leader_id === null || n.leader_id === undefined ? "none" : String(n.leader_id)),
          fact("Term", String(n.term ?? "")),
          fact("Committed / applied", `${n.committed ?? "—"} / ${n.applied ?? "—"}`),
          fact("Store revision", String(n.revision)),
          fact("Database size", n.db_size !== undefined ? `${(n.db_size / (1 << 20)).toFixed(1)} MiB` : "—"),
          fact("Its scheduler", n.scheduler_active ? "active" : "standby"),
          fact("Its maintenance mode", n.maintenance ? "on" : "off"),
          fact("Maintenance requested", m ? (m.requested ? "yes" : "no") : "—"),
          fact("Alarms", (n.alarms || []).length ? n.alarms.map((a) => JSON.stringify(a)).join(", ") : "none"),
          fact("Version", `${n.version || ""} (peer protocol ${n.peer_protocol ?? ""})`),
        ),
        h("h2", {}, "Members"),
        h(
          "table",
          { id: "members-table" },
          h("caption", { class: "sr-only" }, "Cluster members"),
          h("thead", {}, h("tr", {}, ["Node", "Address", "Role", "Leader", "Maintenance"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            members.map((v) => {
              const mode = m && (m.nodes || []).find((x) => x.node_id === v.id || x.id === v.id);
              return h(
                "tr",
                { dataset: { testid: "member-row", nodeId: String(v.id) } },
                h("td", {}, String(v.id)),
                h("td", { class: "mono" }, v.addr),
                h("td", {}, v.kind),
                h("td", {}, v.id === n.leader_id ? "leader" : ""),
                h("td", {}, mode ? describeMode(mode) : "—"),
              );
            }),
          ),
        ),
      );
    } catch (e) {
      if (!ctx.signal.aborted) fill(body, errorBox(e));
    }
  });
}

function describeMode(mode) {
  if (typeof mode.maintenance === "boolean") return mode.maintenance ? "on" : "off";
  if (mode.mode) return String(mode.mode);
  return JSON.stringify(mode);
}

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}

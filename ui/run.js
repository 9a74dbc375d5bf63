// The run view: state, times, annotations, the task graph (SVG), the tasks with their
// status, duration and pending reason, and the actions the token may take (approve a
// waiting task, stop, cancel, restart from failed / from start / chosen tasks). Live from
// `GET /runs/{id}/watch` (each event the whole run) until the run finishes.

import { call, keepSse } from "./api.js";
import { h, fill, badge, runState, timeEl, duration, errorBox } from "./dom.js";
import { taskGraph } from "./graph.js";

export function runHref(runId) {
  return `#/runs/${encodeURIComponent(runId)}`;
}

export function taskHref(runId, taskId) {
  return `${runHref(runId)}/tasks/${encodeURIComponent(taskId)}`;
}

export function runView(root, runId, ctx) {
  const chosen = new Set();
  const head = h("div", { class: "run-head" });
  const actions = h("div", { class: "actions", role: "toolbar", "aria-label": "Run actions" });
  const message = h("div", { role: "status", id: "run-message", class: "message" });
  const graph = h("div", { class: "graph-wrap" });
  const tasks = h("div", { class: "table-wrap" });
  const annotations = h("section", { "aria-labelledby": "annotations-h" });
  const live = h("span", { class: "live", id: "run-live", dataset: { testid: "run-live" } }, "");
  let current = null;

  fill(
    root,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/runs" }, "Runs"), " / ", h("span", { id: "crumb-run" }, runId)),
    head,
    actions,
    message,
    h("section", { "aria-labelledby": "graph-h" }, h("h2", { id: "graph-h" }, "Task graph"), graph),
    h("section", { "aria-labelledby": "tasks-h" }, h("h2", { id: "tasks-h" }, "Tasks"), tasks),
    annotations,
  );

  async function act(label, f) {
    fill(message, `${label}…`);
    try {
      const resp = await f();
      fill(message, `${label}: done.`);
      return resp;
    } catch (e) {
      fill(message, errorBox(e));
      return null;
    }
  }

  const path = `/api/v1/runs/${encodeURIComponent(runId)}`;
  const runAction = (action) => act(action === "stop" ? "Stopping" : "Cancelling", async () => show(await call(`${path}/actions`, { method: "PUT", body: { action } })));
  const approve = (taskId, name) =>
    act(`Approving ${name}`, async () => show(await call(`${path}/tasks/${encodeURIComponent(taskId)}/actions`, { method: "PUT", body: { action: "approve" } })));
  const restart = (body, label) =>
    act(label, async () => {
      const resp = await call(`${path}/restart`, { method: "POST", body });
      location.hash = runHref(resp.run.id);
      return resp;
    });

  function show(resp) {
    current = resp;
    const run = resp.run;
    const cfg = resp.run_config;
    const state = runState(run);
    const focusKey = document.activeElement && root.contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
    document.title = `#${run.counter} ${run.name} — Cairn`;
    fill(
      head,
      h("div", { class: "view-head" }, h("h1", {}, `Run #${run.counter} ${run.name}`), live),
      h(
        "dl",
        { class: "facts" },
        fact("State", badge(state, state, "run-state")),
        fact("Group", h("a", { href: `#/runs?group=${encodeURIComponent(run.group)}` }, run.group)),
        fact("Queued", timeEl(run.enqueue_time)),
        fact("Started", timeEl(run.start_time)),
        fact("Ended", timeEl(run.end_time)),
        fact("Duration", duration(run.start_time, run.end_time) || "—"),
        resp.pending && resp.pending.run ? fact("Waiting", h("span", { dataset: { testid: "run-pending" } }, resp.pending.run)) : null,
      ),
      cfg.setup_errors && cfg.setup_errors.length
        ? h("section", { class: "setup-errors", "aria-label": "Setup errors" }, h("h2", {}, "Setup errors"), h("ul", {}, cfg.setup_errors.map((e) => h("li", {}, h("pre", {}, e)))))
        : null,
    );

    const finished = run.phase === "finished";
    const failedish = finished && (run.result === "failed" || run.result === "stopped");
    fill(
      actions,
      ctx.canWrite
        ? [
            run.phase === "running" && !run.stop ? button("action-stop", "Stop", () => runAction("stop")) : null,
            run.phase === "queued" ? button("action-cancel", "Cancel", () => runAction("cancel")) : null,
            failedish ? button("action-restart-failed", "Restart from failed", () => restart({}, "Restarting from the failed tasks")) : null,
            finished ? button("action-restart-start", "Restart from start", () => restart({ from_start: true }, "Restarting from start")) : null,
            finished
              ? button("action-restart-tasks", "Restart chosen tasks", () => {
                  if (!chosen.size) {
                    fill(message, "Choose tasks to restart in the table below first.");
                    return;
                  }
                  restart({ tasks: [...chosen] }, `Restarting ${[...chosen].join(", ")}`);
                })
              : null,
          ]
        : null,
    );

    fill(graph, taskGraph(resp, (tid) => taskHref(runId, tid)));

    const pending = (resp.pending && resp.pending.tasks) || {};
    const cfgTasks = Object.values(cfg.tasks || {}).sort((a, b) => a.level - b.level || a.name.localeCompare(b.name));
    fill(
      tasks,
      h(
        "table",
        { class: "tasks", id: "tasks-table" },
        h("caption", { class: "sr-only" }, "Tasks of the run"),
        h(
          "thead",
          {},
          h("tr", {}, [finished && ctx.canWrite ? "Restart" : null, "Task", "Status", "Duration", "Waiting for", ""].filter((c) => c !== null).map((c) => h("th", { scope: "col" }, c))),
        ),
        h(
          "tbody",
          {},
          cfgTasks.map((t) => {
            const rt = (run.tasks || {})[t.id] || { status: "notstarted" };
            const waiting = rt.waiting_approval && !rt.approved;
            const st = waiting ? "waiting approval" : rt.status;
            return h(
              "tr",
              { dataset: { testid: "task-row", taskId: t.id, taskName: t.name, status: rt.status } },
              finished && ctx.canWrite
                ? h(
                    "td",
                    {},
                    h("input", {
                      type: "checkbox",
                      "aria-label": `Restart ${t.name}`,
                      checked: chosen.has(t.name),
                      dataset: { testid: "restart-choose", taskName: t.name, focusKey: `choose-${t.id}` },
                      onchange: (e) => (e.target.checked ? chosen.add(t.name) : chosen.delete(t.name)),
                    }),
                  )
                : null,
              h("td", {}, h("a", { href: taskHref(runId, t.id), dataset: { focusKey: `task-${t.id}` } }, t.name)),
              h("td", {}, badge(st, waiting ? "waiting" : rt.status, "task-status"), rt.fail_error ? h("div", { class: "fail" }, rt.fail_error) : null),
              h("td", {}, duration(rt.start_time, rt.end_time)),
              h("td", { class: "muted" }, pending[t.name] || ""),
              h(
                "td",
                {},
                waiting && ctx.canWrite
                  ? h(
                      "button",
                      {
                        type: "button",
                        class: "primary",
                        dataset: { testid: "approve-task", taskId: t.id, focusKey: `approve-${t.id}` },
                        onclick: () => approve(t.id, t.name),
                      },
                      `Approve ${t.name}`,
                    )
                  : null,
              ),
            );
          }),
        ),
      ),
    );

    const ann = Object.entries(run.annotations || {});
    fill(
      annotations,
      h("h2", { id: "annotations-h" }, "Annotations"),
      ann.length ? h("dl", { class: "facts", id: "run-annotations" }, ann.map(([k, v]) => fact(k, v))) : h("p", { class: "muted" }, "None."),
    );

    if (focusKey) {
      const again = root.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
      if (again) again.focus();
    }
  }

  call(path, { signal: ctx.signal })
    .then(show)
    .catch((e) => {
      if (!ctx.signal.aborted) fill(message, errorBox(e));
    });
  keepSse({
    pathFor: () => `${path}/watch`,
    onEvent: ({ data }) => {
      try {
        show(JSON.parse(data));
      } catch (_) {
        // A malformed event: the next one shows the run.
      }
    },
    onStatus: (s) => { live.textContent = s === "live" ? "● live" : s; },
    shouldReopen: () => !(current && current.run.phase === "finished"),
    signal: ctx.signal,
  }).then(() => {
    if (current && current.run.phase === "finished") live.textContent = "";
  });
}

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}

function button(id, text, onclick) {
  return h("button", { type: "button", id, dataset: { testid: id, focusKey: id }, onclick }, text);
}

// The task view: the task's steps with their phase, exit code and times (live from the
// run's watch), and the log of one step (the chosen one, else the running one, else the
// first that failed, else the last) in a live, virtualised log view.

import { call, keepSse, withQuery } from "./api.js";
import { h, fill, badge, timeEl, duration, errorBox } from "./dom.js";
import { LogView } from "./logview.js";
import { runHref, taskHref } from "./run.js";

export function taskView(root, runId, taskId, params, ctx) {
  const runPath = `/api/v1/runs/${encodeURIComponent(runId)}`;
  const head = h("div", {});
  const steps = h("div", { class: "table-wrap" });
  const message = h("div", { role: "status", class: "message", id: "task-message" });
  const logSlot = h("section", { "aria-labelledby": "log-h" });
  let logView = null;
  let chosen = params.get("step");
  let current = null;

  fill(
    root,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/runs" }, "Runs"), " / ", h("a", { href: runHref(runId), id: "crumb-run" }, runId), " / ", h("span", {}, taskId)),
    head,
    message,
    h("section", { "aria-labelledby": "steps-h" }, h("h2", { id: "steps-h" }, "Steps"), steps),
    logSlot,
  );
  ctx.signal.addEventListener("abort", () => logView && logView.destroy());

  function pick(rt) {
    if (chosen !== null) return chosen;
    const list = rt.steps || [];
    const running = list.findIndex((s) => s.phase === "running");
    if (running >= 0) return String(running);
    const failed = list.findIndex((s) => s.exit_status !== null && s.exit_status !== undefined && s.exit_status !== 0);
    if (failed >= 0) return String(failed);
    for (let i = list.length - 1; i >= 0; i--) if (list[i].phase && list[i].phase !== "notstarted") return String(i);
    return "setup";
  }

  function show(resp) {
    current = resp;
    const cfg = resp.run_config.tasks[taskId] || Object.values(resp.run_config.tasks).find((t) => t.name === taskId);
    if (!cfg) {
      fill(message, errorBox(new Error(`run ${runId} has no task ${taskId}`)));
      return;
    }
    const rt = resp.run.tasks[cfg.id] || { status: "notstarted", steps: [] };
    const waiting = rt.waiting_approval && !rt.approved;
    document.title = `${cfg.name} — run #${resp.run.counter} — Cairn`;
    fill(
      head,
      h("h1", {}, `Task ${cfg.name}`),
      h(
        "p",
        {},
        badge(waiting ? "waiting approval" : rt.status, waiting ? "waiting" : rt.status, "task-status"),
        " ",
        duration(rt.start_time, rt.end_time),
        resp.pending && resp.pending.tasks && resp.pending.tasks[cfg.name] ? h("span", { class: "muted" }, ` — ${resp.pending.tasks[cfg.name]}`) : null,
      ),
      rt.fail_error ? h("p", { class: "fail" }, rt.fail_error) : null,
      waiting && ctx.canWrite
        ? h(
            "button",
            {
              type: "button",
              class: "primary",
              id: "task-approve",
              dataset: { testid: "approve-task", taskId: cfg.id },
              onclick: async () => {
                try {
                  show(await call(`${runPath}/tasks/${encodeURIComponent(cfg.id)}/actions`, { method: "PUT", body: { action: "approve" } }));
                  fill(message, "Approved.");
                } catch (e) {
                  fill(message, errorBox(e));
                }
              },
            },
            `Approve ${cfg.name}`,
          )
        : null,
    );

    const step = pick(rt);
    const rows = [["setup", "setup", rt.setup_step || { phase: "notstarted" }]].concat(
      (cfg.steps || []).map((s, i) => [String(i), stepName(s), (rt.steps || [])[i] || { phase: "notstarted" }]),
    );
    fill(
      steps,
      h(
        "table",
        { class: "steps", id: "steps-table" },
        h("caption", { class: "sr-only" }, "Steps of the task"),
        h("thead", {}, h("tr", {}, ["Step", "Phase", "Exit", "Started", "Duration"].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          rows.map(([key, name, st]) =>
            h(
              "tr",
              { dataset: { testid: "step-row", step: key, phase: st.phase }, class: key === step ? "selected" : null },
              h(
                "td",
                {},
                h(
                  "a",
                  { href: withQuery(taskHref(runId, cfg.id), { step: key }), "aria-current": key === step ? "true" : null, dataset: { testid: "step-link" } },
                  key === "setup" ? "setup" : `${Number(key) + 1}. ${name}`,
                ),
              ),
              h("td", {}, badge(st.phase, st.phase)),
              h("td", { dataset: { testid: "step-exit" } }, st.exit_status === null || st.exit_status === undefined ? "" : String(st.exit_status)),
              h("td", {}, timeEl(st.start_time)),
              h("td", {}, duration(st.start_time, st.end_time)),
            ),
          ),
        ),
      ),
    );

    if (!logView) {
      chosen = step;
      const label = step === "setup" ? "setup" : `step ${Number(step) + 1} (${stepName((cfg.steps || [])[Number(step)] || {})})`;
      logView = new LogView({
        pathFor: (offset, follow) =>
          withQuery(`${runPath}/tasks/${encodeURIComponent(cfg.id)}/logs`, { step, offset: offset || "0", follow }),
        fileName: `${runId}-${cfg.name}-${step}.log`,
        label: `Log of ${label}`,
      });
      fill(logSlot, h("h2", { id: "log-h" }, `Log: ${label}`), logView.el);
    }
  }

  call(runPath, { signal: ctx.signal })
    .then(show)
    .catch((e) => {
      if (!ctx.signal.aborted) fill(message, errorBox(e));
    });
  keepSse({
    pathFor: () => `${runPath}/watch`,
    onEvent: ({ data }) => {
      try {
        show(JSON.parse(data));
      } catch (_) {
        // The next event shows the task.
      }
    },
    shouldReopen: () => !(current && current.run.phase === "finished"),
    signal: ctx.signal,
  });
}

function stepName(s) {
  if (!s) return "";
  let name = s.name || (s.type === "run" && s.command ? s.command.split("\n")[0] : s.type || "");
  if (name.length > 60) name = `${name.slice(0, 59)}…`;
  return name;
}

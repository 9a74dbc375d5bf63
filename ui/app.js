// Cairn's web page: sign-in, the hash router and the page's frame. The views are in
// runs.js, run.js, task.js and system.js; the API client in api.js.
//
// Stable hooks for browser tests (ids unless marked data-testid):
//   sign-in:    #signin-form, #signin-token, #signin-submit, #signin-error;
//               #signout, #role (data-testid="role": "read-only" or "can act")
//   navigation: #nav-runs, #nav-executors, #nav-cluster
//   runs:       #runs-table, #runs-filter, #filter-group, #filter-phase, #filter-result,
//               #filter-apply, #filter-clear, #page-older, #page-newer, #page-first,
//               #runs-live; data-testid="run-row" (data-run-id, data-state) with
//               data-testid="run-state" inside
//   a run:      data-testid="task-graph"; data-testid="task-node" (data-task-id,
//               data-task-name, data-status); data-testid="task-edge" (data-from, data-to);
//               data-testid="task-row"; data-testid="approve-task" (data-task-id);
//               data-testid="restart-choose" (data-task-name); actions #action-stop,
//               #action-cancel, #action-restart-failed, #action-restart-start,
//               #action-restart-tasks (each also its data-testid); #run-message;
//               data-testid="run-state"; #run-annotations; #run-live
//   a task:     #steps-table, data-testid="step-row" (data-step, data-phase),
//               data-testid="step-link", data-testid="step-exit"; #task-approve;
//               log: #log-view (data-testid="log-view"; lines are .log-line with
//               data-line), #log-jump-end, #log-download, #log-status
//   executors:  #executors-table, data-testid="executor-row" (data-executor-id)
//   cluster:    #cluster-facts, #members-table, data-testid="member-row"
// Action buttons are not rendered for a token that may not act (read-only).

import { token, setToken, call, canAct, onUnauthorized } from "./api.js";
import { h, fill } from "./dom.js";
import { runsView } from "./runs.js";
import { runView } from "./run.js";
import { taskView } from "./task.js";
import { executorsView, clusterView } from "./system.js";

const main = document.getElementById("main");
const nav = document.getElementById("main-nav");
const session = document.getElementById("session");
const roleEl = document.getElementById("role");

let canWrite = false;
let view = null;
let lastPath = null;
/** While a token is being checked, its 401 is the sign-in form's to report. */
let checking = false;

function stopView() {
  if (view) view.abort();
  view = null;
}

function showSignIn(problem) {
  stopView();
  lastPath = null;
  nav.hidden = true;
  session.hidden = true;
  document.title = "Sign in — Cairn";
  const input = h("input", { id: "signin-token", name: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false", "aria-describedby": "signin-help" });
  const error = h("p", { id: "signin-error", class: "error", role: "alert" }, problem || "");
  const form = h(
    "form",
    { id: "signin-form", class: "signin", dataset: { testid: "signin-form" } },
    h("h1", {}, "Sign in"),
    h("label", { for: "signin-token" }, "API token"),
    input,
    h("p", { id: "signin-help", class: "muted" }, "A token from cairn token create (or the admin token). It is kept in this tab's session storage only."),
    h("button", { type: "submit", id: "signin-submit", class: "primary", dataset: { testid: "signin-submit" } }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    error.textContent = "Checking…";
    setToken(t);
    const problem = await checkToken();
    if (problem) {
      setToken(null);
      error.textContent = problem;
      input.focus();
      return;
    }
    error.textContent = "";
    route();
  });
  fill(main, form);
  input.focus();
}

/** Whether the stored token reads runs (`null`) or what is wrong with it. */
async function checkToken() {
  checking = true;
  try {
    await call("/api/v1/runs?limit=1");
    canWrite = await canAct();
  } catch (e) {
    if (e.status === 401) return "The server does not know this token.";
    if (e.status === 403) return "This token may not read runs (use a user, read-only or admin token).";
    return `The server did not answer: ${e.message}`;
  } finally {
    checking = false;
  }
  roleEl.textContent = canWrite ? "can act" : "read-only";
  return null;
}

onUnauthorized(() => {
  if (checking) return;
  setToken(null);
  showSignIn("The token was refused: sign in again.");
});

document.getElementById("signout").addEventListener("click", () => {
  setToken(null);
  showSignIn();
});

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/runs";
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { path, parts, params };
}

function route() {
  if (!token()) {
    showSignIn();
    return;
  }
  nav.hidden = false;
  session.hidden = false;
  const { path, parts, params } = parseHash();
  stopView();
  view = new AbortController();
  const ctx = { signal: view.signal, canWrite };
  document.title = "Cairn";
  let section = "runs";
  if (parts[0] === "runs" && parts.length === 1) runsView(main, params, ctx);
  else if (parts[0] === "runs" && parts.length === 2) runView(main, parts[1], ctx);
  else if (parts[0] === "runs" && parts.length === 4 && parts[2] === "tasks") taskView(main, parts[1], parts[3], params, ctx);
  else if (parts[0] === "executors") {
    section = "executors";
    executorsView(main, ctx);
  } else if (parts[0] === "cluster") {
    section = "cluster";
    clusterView(main, ctx);
  } else {
    fill(main, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/runs" }, "See the runs.")));
  }
  for (const a of nav.querySelectorAll("a")) {
    if (a.id === `nav-${section}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  // A new page moves the focus to its content (for keyboard and screen-reader users);
  // a change of the query only (a filter, a step) keeps it where it is.
  if (lastPath !== null && lastPath !== path) main.focus({ preventScroll: true });
  lastPath = path;
}

window.addEventListener("hashchange", route);

(async () => {
  if (!token()) {
    showSignIn();
    return;
  }
  const problem = await checkToken();
  if (problem) {
    setToken(null);
    showSignIn(problem);
    return;
  }
  route();
})();

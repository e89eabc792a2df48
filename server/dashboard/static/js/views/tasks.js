// Every task, newest first, filtered by state and kind, a page at a time. The filters
// live in the address (`#/tasks?state=running&kind=training`) so a view can be shared
// and the browser's Back button works.

import { listTasks } from "../api.js";
import { fill, h } from "../dom.js";
import { duration, percent, timeElement } from "../format.js";
import { poll } from "../poll.js";
import { notice, stateBadge, STATES, table, taskLink, taskSummary } from "../widgets.js";

export const PAGE_SIZE = 25;
const KINDS = ["training", "inference"];

function select(name, label, options, chosen) {
  return h(
    "label",
    {},
    `${label} `,
    h(
      "select",
      { name, id: `filter-${name}` },
      h("option", { value: "" }, "any"),
      options.map((value) => h("option", { value, selected: value === chosen }, value)),
    ),
  );
}

function row(task) {
  const metrics = task.metrics || {};
  const score = metrics.val_accuracy ?? metrics.accuracy;
  return h(
    "tr",
    { "data-task": task.task_id, "data-state": task.state, "data-kind": task.kind },
    h("td", {}, taskLink(task.task_id)),
    h("td", {}, stateBadge(task.state)),
    h("td", {}, task.kind),
    h("td", {}, taskSummary(task)),
    h("td", {}, task.assigned_device || task.device),
    h("td", { class: "num" }, String(task.priority)),
    h("td", {}, timeElement(task.create_time)),
    h("td", {}, task.start_time ? duration(task.start_time, task.end_time) : "—"),
    h("td", { class: "num" }, metrics.progress !== undefined ? percent(metrics.progress) : "—"),
    h("td", { class: "num" }, score !== undefined ? percent(score) : "—"),
  );
}

export function render(main, params) {
  const state = (params.get("state") || "").toLowerCase();
  const kind = (params.get("kind") || "").toLowerCase();
  const problem = notice();
  const form = h(
    "form",
    { class: "filters", id: "task-filters" },
    select(
      "state",
      "State",
      STATES.map((s) => s.toLowerCase()),
      state,
    ),
    select("kind", "Kind", KINDS, kind),
    h("button", { type: "submit" }, "Show"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const name of ["state", "kind"])
      if (form.elements[name].value) query.set(name, form.elements[name].value);
    location.hash = `#/tasks${query.size ? `?${query}` : ""}`;
  });
  const summary = h("p", { class: "muted", id: "tasks-summary" });
  const holder = h("div", { class: "table-wrap" });
  const previous = h("button", { type: "button", disabled: true }, "← Newer");
  const next = h("button", { type: "button", disabled: true }, "Older →");
  fill(
    main,
    h("h1", {}, "Tasks"),
    form,
    problem.element,
    summary,
    holder,
    h("nav", { class: "pager", "aria-label": "Pages" }, previous, next),
  );

  // Tokens of the pages before this one, to go back; "" is the first page.
  const tokens = [""];
  let nextToken = "";
  const refresh = async () => {
    const page = await listTasks({
      state,
      limit: PAGE_SIZE,
      page_token: tokens[tokens.length - 1],
    });
    // The API pages each kind on its own; both kinds' pages are shown merged by time.
    const tasks = [
      ...(kind !== "inference" ? page.training_tasks : []),
      ...(kind !== "training" ? page.inference_tasks : []),
    ].sort((a, b) => String(b.create_time).localeCompare(String(a.create_time)));
    const total =
      (kind !== "inference" ? page.total_training : 0) +
      (kind !== "training" ? page.total_inference : 0);
    const { element, body } = table(
      `Tasks${state ? ` ${state}` : ""}${kind ? `, ${kind} only` : ""}, newest first`,
      [
        "Task",
        "State",
        "Kind",
        "What",
        "Device",
        "Priority",
        "Submitted",
        "Ran for",
        "Progress",
        "Accuracy",
      ],
      { class: "data", id: "tasks" },
    );
    body.append(...tasks.map(row));
    if (!tasks.length)
      body.append(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No tasks.")));
    fill(holder, element);
    fill(summary, `${total} ${total === 1 ? "task" : "tasks"} in all; page ${tokens.length}.`);
    nextToken = page.next_page_token;
    next.disabled = !nextToken;
    previous.disabled = tokens.length === 1;
    problem.clear();
  };
  const poller = poll(refresh, { onError: (error) => problem.show(error.detail || error.message) });
  next.addEventListener("click", () => {
    if (!nextToken) return;
    tokens.push(nextToken);
    poller.now();
  });
  previous.addEventListener("click", () => {
    if (tokens.length > 1) tokens.pop();
    poller.now();
  });
  return () => poller.stop();
}

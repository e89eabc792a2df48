// Small pieces several pages show the same way.

import { h } from "./dom.js";
import { shortId } from "./format.js";

export const STATES = ["QUEUED", "RUNNING", "PREEMPTED", "SUCCEEDED", "FAILED", "CANCELLED"];
export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

/** A task's state as a labelled badge (colour and text: colour alone tells nobody who
 *  cannot see it). */
export function stateBadge(state) {
  return h(
    "span",
    { class: `badge state-${(state || "unknown").toLowerCase()}`, "data-state": state },
    state || "?",
  );
}

/** A link to a task's page, showing the short form of its id (the full id on hover). */
export function taskLink(taskId) {
  return h(
    "a",
    { href: `#/task/${encodeURIComponent(taskId)}`, title: taskId, class: "task-id" },
    shortId(taskId),
  );
}

/** What a task runs, in a few words: "training resnet18 on synthetic". */
export function taskSummary(task) {
  const verb = task.kind === "inference" ? "inference with" : "training";
  // A dataset is a path under the dataset root: its last part names it well enough.
  const dataset = (task.dataset || "").replace(/\/+$/, "").split("/").pop();
  return [verb, task.model || "", dataset ? `on ${dataset}` : ""].filter(Boolean).join(" ");
}

/** A message area for a page: `show(text, kind)` with kind "error" (read out at once)
 *  or "ok"; `clear()`. */
export function notice() {
  const element = h("p", { class: "notice", hidden: true });
  return {
    element,
    show(text, kind = "error") {
      // The same message again (a poll failing every 2 s) is not announced again.
      if (!element.hidden && element.textContent === text && element.classList.contains(kind))
        return;
      element.className = `notice ${kind}`;
      element.setAttribute("role", kind === "error" ? "alert" : "status");
      element.textContent = text;
      element.hidden = false;
    },
    clear() {
      element.hidden = true;
      element.textContent = "";
    },
  };
}

/** A `<table>` with a caption and column headings; returns it and its body. */
export function table(caption, headings, attributes = {}) {
  const body = h("tbody");
  const element = h(
    "table",
    attributes,
    h("caption", {}, caption),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        headings.map((heading) => h("th", { scope: "col" }, heading)),
      ),
    ),
    body,
  );
  return { element, body };
}

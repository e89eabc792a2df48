// Concurrency limits per device, changed from the page through the same call as any
// client's (`POST /api/v2/resources/config`, gRPC `UpdateLimits`). The page checks
// nothing itself: the server decides, and a refusal is shown as the server's sentence.

import { get, post } from "../api.js";
import { fill, h } from "../dom.js";
import { notice } from "../widgets.js";

const GROUP_NOTE = {
  cuda: "every GPU at once",
  cpu: "every node's CPU at once",
};

function deviceForm(name, limits, usage, onSaved, isGroup) {
  const problem = notice();
  const field = (kind) =>
    h(
      "label",
      {},
      `${kind[0].toUpperCase()}${kind.slice(1)} at once `,
      h("input", {
        type: "number",
        name: kind,
        value: limits[kind],
        step: 1,
        inputmode: "numeric",
        required: true,
        id: `limit-${name}-${kind}`,
      }),
    );
  const form = h(
    "form",
    { class: "limits", "data-device": name, novalidate: true },
    h(
      "fieldset",
      {},
      h("legend", {}, name, isGroup ? h("span", { class: "muted" }, ` (${GROUP_NOTE[name]})`) : ""),
      field("training"),
      field("inference"),
      usage
        ? h(
            "p",
            { class: "muted" },
            `In use now: ${usage.training} training, ${usage.inference} inference; waiting: ${usage.queued_training} training, ${usage.queued_inference} inference.`,
          )
        : null,
      h("button", { type: "submit" }, `Save ${name}`),
      problem.element,
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.clear();
    const value = (kind) => {
      const text = form.elements[kind].value.trim();
      // Sent as typed; a number the server refuses comes back as its sentence.
      return text === "" ? null : Number(text);
    };
    const body = {
      max_concurrent: { [name]: { training: value("training"), inference: value("inference") } },
    };
    try {
      const answer = await post("/api/v2/resources/config", body);
      const now = answer.max_concurrent[name] || body.max_concurrent[name];
      problem.show(
        `Saved: ${name} now runs at most ${now.training} training and ${now.inference} inference tasks at once.`,
        "ok",
      );
      onSaved(answer);
    } catch (error) {
      problem.show(`Not changed: ${error.detail || error.message}`);
    }
  });
  return form;
}

export function render(main) {
  const problem = notice();
  const forms = h("div", { class: "limit-forms", id: "limit-forms" });
  fill(
    main,
    h("h1", {}, "Limits"),
    h(
      "p",
      {},
      "How many tasks of each kind may run at once on a device. A larger limit admits waiting tasks at once; a smaller one stops no running task, it only holds new ones until fewer run.",
    ),
    problem.element,
    forms,
  );
  const load = async () => {
    try {
      const resources = await get("/api/v2/resources");
      const names = Object.keys(resources.max_concurrent).sort();
      const isGroup = (name) =>
        (name === "cuda" && names.some((n) => /cuda:\d+$/.test(n))) ||
        (name === "cpu" && names.some((n) => n.endsWith("/cpu")));
      // Keep the message of a form just saved: rebuild only the others' figures.
      fill(
        forms,
        names.map((name) =>
          deviceForm(
            name,
            resources.max_concurrent[name],
            resources.device_usage[name],
            refreshUsage,
            isGroup(name),
          ),
        ),
      );
    } catch (error) {
      problem.show(error.detail || error.message);
    }
  };
  // After a save, the inputs already hold what was saved; the other devices' figures
  // (a `cuda` change moves every `cuda:N`) are brought up to date.
  const refreshUsage = (answer) => {
    for (const form of forms.querySelectorAll("form.limits")) {
      const limits = answer.max_concurrent[form.dataset.device];
      if (!limits) continue;
      form.elements.training.value = limits.training;
      form.elements.inference.value = limits.inference;
    }
  };
  load();
  return () => {};
}

// The model registry's names: their versions, aliases and metrics (`/api/v2/models`).
// On a server without the registry the route answers 404 and the page says so (the
// navigation hides the link; see main.js).

import { get } from "../api.js";
import { fill, h } from "../dom.js";
import { bytes, percent, timeElement } from "../format.js";
import { notice, table, taskLink } from "../widgets.js";

function score(metrics) {
  const value = metrics.val_accuracy ?? metrics.best_val_accuracy ?? metrics.accuracy;
  return value === undefined ? "—" : percent(value);
}

function aliasText(aliases) {
  const entries = Object.entries(aliases || {});
  return entries.length
    ? entries.map(([alias, version]) => `${alias} → ${version}`).join(", ")
    : "—";
}

function listTable(models) {
  const { element, body } = table(
    "Named models",
    ["Name", "Latest", "Versions", "Aliases", "Architecture", "Validation accuracy", "Updated"],
    { class: "data", id: "models" },
  );
  for (const model of models) {
    body.append(
      h(
        "tr",
        { "data-model": model.name },
        h("td", {}, h("a", { href: `#/models/${encodeURIComponent(model.name)}` }, model.name)),
        h("td", { class: "num" }, String(model.latest_version)),
        h("td", { class: "num" }, String(model.version_count)),
        h("td", {}, aliasText(model.aliases)),
        h("td", {}, model.latest.architecture),
        h("td", { class: "num" }, score(model.latest.metrics)),
        h("td", {}, timeElement(model.update_time)),
      ),
    );
  }
  if (!models.length)
    body.append(
      h(
        "tr",
        {},
        h(
          "td",
          { colspan: 7, class: "muted" },
          "No named models yet: a training publishes one with model_name.",
        ),
      ),
    );
  return element;
}

function versionsTable(model) {
  const { element, body } = table(
    `Versions of ${model.name} (aliases: ${aliasText(model.aliases)})`,
    [
      "Version",
      "Aliases",
      "From task",
      "Architecture",
      "Classes",
      "Image size",
      "Validation accuracy",
      "Size",
      "Published",
      "Model file",
    ],
    { class: "data", id: "model-versions" },
  );
  for (const version of [...model.versions].reverse()) {
    const classes =
      version.classes.length > 4
        ? `${version.classes.slice(0, 4).join(", ")}, … (${version.classes.length})`
        : version.classes.join(", ");
    body.append(
      h(
        "tr",
        { "data-version": version.version },
        h("td", { class: "num" }, String(version.version)),
        h("td", {}, version.aliases.join(", ") || "—"),
        h("td", {}, version.task_id ? taskLink(version.task_id) : "—"),
        h("td", {}, version.architecture),
        h("td", {}, classes),
        h("td", { class: "num" }, `${version.image_size} px`),
        h("td", { class: "num" }, score(version.metrics)),
        h("td", { class: "num" }, bytes(version.size_bytes)),
        h("td", {}, timeElement(version.create_time)),
        h("td", {}, h("code", {}, version.model_path)),
      ),
    );
  }
  return element;
}

export function render(main, params, name) {
  const problem = notice();
  const holder = h("div", { class: "table-wrap" });
  fill(main, h("h1", {}, name ? `Model ${name}` : "Named models"), problem.element, holder);
  (async () => {
    try {
      if (name) {
        fill(
          holder,
          h("p", {}, h("a", { href: "#/models" }, "← All named models")),
          versionsTable(await get(`/api/v2/models/${encodeURIComponent(name)}`)),
        );
      } else {
        fill(holder, listTable((await get("/api/v2/models")).models));
      }
    } catch (error) {
      problem.show(
        error.status === 404 && !name
          ? "This server has no model registry."
          : error.detail || error.message,
      );
    }
  })();
  return () => {};
}

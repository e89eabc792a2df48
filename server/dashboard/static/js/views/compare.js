// Several trainings side by side: their curves overlaid (one colour per training; solid
// for the training split, dashed for validation) and their parameters in columns, the
// rows where they differ marked. The chosen tasks live in the address
// (`#/compare?ids=a,b`); the logs of running ones are followed live.

import { get, listTasks } from "../api.js";
import { LineChart } from "../chart.js";
import { accuracyFormat, lossFormat } from "../curves.js";
import { fill, h } from "../dom.js";
import { number, shortId, timeElement } from "../format.js";
import { TrainingHistory } from "../history.js";
import { LogStream } from "../logstream.js";
import { notice, stateBadge, taskLink, taskSummary } from "../widgets.js";

const CHOICES = 50;

function picker(trainings, chosen) {
  const form = h(
    "form",
    { id: "compare-picker", class: "picker" },
    h(
      "fieldset",
      {},
      h("legend", {}, "Trainings to compare (newest first)"),
      trainings.length
        ? h(
            "ul",
            { class: "choices" },
            trainings.map((task) =>
              h(
                "li",
                {},
                h(
                  "label",
                  {},
                  h("input", {
                    type: "checkbox",
                    name: "ids",
                    value: task.task_id,
                    checked: chosen.includes(task.task_id),
                  }),
                  " ",
                  h("code", {}, shortId(task.task_id)),
                  " ",
                  stateBadge(task.state),
                  " ",
                  taskSummary(task),
                  " · ",
                  timeElement(task.create_time),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No trainings yet."),
    ),
    h("button", { type: "submit" }, "Compare"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = [...form.querySelectorAll("input[name=ids]:checked")].map((box) => box.value);
    location.hash = ids.length
      ? `#/compare?ids=${ids.map(encodeURIComponent).join(",")}`
      : "#/compare";
  });
  return form;
}

function paramsSideBySide(tasks) {
  const names = [...new Set(tasks.flatMap((task) => Object.keys(task.training || {})))];
  const show = (value) =>
    value === undefined || value === ""
      ? "—"
      : typeof value === "number"
        ? number(value)
        : String(value);
  const rows = names.map((name) => {
    const values = tasks.map((task) => show((task.training || {})[name]));
    const differs = new Set(values).size > 1;
    return h(
      "tr",
      { class: differs ? "differs" : null, "data-param": name },
      h(
        "th",
        { scope: "row" },
        name,
        differs ? h("span", { class: "differs-mark", title: "differs" }, " ≠") : "",
      ),
      values.map((value) => h("td", {}, value)),
    );
  });
  return h(
    "table",
    { class: "data params-compare", id: "compare-params" },
    h("caption", {}, "Parameters (≠: they differ)"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "parameter"),
        tasks.map((task, i) =>
          h(
            "th",
            { scope: "col", class: `series-${i % 8}` },
            h("span", { class: "swatch", "aria-hidden": "true" }),
            taskLink(task.task_id),
            " ",
            stateBadge(task.state),
          ),
        ),
      ),
    ),
    h("tbody", {}, rows),
  );
}

export function render(main, params) {
  // URLSearchParams has decoded the list already; the ids are plain task ids.
  const chosen = (params.get("ids") || "").split(",").filter(Boolean);
  const problem = notice();
  const pickerHolder = h("div");
  const result = h("div", { id: "compare-result" });
  fill(main, h("h1", {}, "Compare trainings"), problem.element, pickerHolder, result);
  const streams = [];
  let left = false;

  (async () => {
    try {
      const list = await listTasks({ limit: CHOICES });
      fill(pickerHolder, picker(list.training_tasks, chosen));
      if (!chosen.length) return;
      const tasks = await Promise.all(
        chosen.map((id) => get(`/api/v1/tasks/${encodeURIComponent(id)}`)),
      );
      const loss = new LineChart({
        title: "Loss per epoch",
        x: "Epoch",
        y: "Loss",
        yFormat: lossFormat,
        id: "compare-loss",
      });
      const accuracy = new LineChart({
        title: "Accuracy per epoch",
        x: "Epoch",
        y: "Accuracy",
        yFormat: accuracyFormat,
        id: "compare-accuracy",
      });
      const histories = tasks.map(() => new TrainingHistory());
      let pending = null;
      const draw = () => {
        pending = null;
        const series = (metric, label) =>
          tasks.flatMap((task, i) => [
            {
              name: `${task.task_id}:${metric}`,
              label: `${shortId(task.task_id)} ${label}`,
              points: histories[i].epochSeries(metric),
              colour: i,
            },
            {
              name: `${task.task_id}:val_${metric}`,
              label: `${shortId(task.task_id)} validation`,
              points: histories[i].epochSeries(`val_${metric}`),
              colour: i,
              dashed: true,
            },
          ]);
        loss.update(series("loss", "training"));
        accuracy.update(series("accuracy", "training"));
      };
      fill(
        result,
        h("div", { class: "charts" }, loss.element, accuracy.element),
        paramsSideBySide(tasks),
      );
      draw();
      tasks.forEach((task, i) => {
        if (left) return;
        streams.push(
          new LogStream(task.task_id, {
            onEvent(event) {
              if (histories[i].add(event).epochs && pending === null)
                pending = requestAnimationFrame(draw);
            },
          }).start(),
        );
      });
    } catch (error) {
      problem.show(error.detail || error.message);
    }
  })();
  return () => {
    left = true;
    streams.forEach((stream) => stream.stop());
  };
}

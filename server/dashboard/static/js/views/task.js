// One task: its parameters, state timeline, curves, checkpoints, model file and live log,
// and a cancel button. The log streams (resuming after a dropped connection); the task
// itself (queue position, effective priority) is polled until it ends.

import { get, post } from "../api.js";
import { definitions, fill, h } from "../dom.js";
import { duration, imagesPerSecond, number, percent, timeElement } from "../format.js";
import { TrainingHistory } from "../history.js";
import { trainingCharts } from "../curves.js";
import { LogStream } from "../logstream.js";
import { poll } from "../poll.js";
import { notice, stateBadge, TERMINAL } from "../widgets.js";

// The log view keeps this many lines; older ones are dropped (the stored log keeps all).
const LOG_LINES = 5000;

const STREAM_STATUS = {
  connecting: "Connecting to the log…",
  live: "Following the log live.",
  reconnecting: "Connection lost; reconnecting and resuming after the last line shown…",
  ended: "The log is complete.",
  unauthorized: "The server refused the token.",
  refused: "The server refused to send this task's log (no such task?).",
};

function paramsTable(task) {
  const params = task.training || task.inference || {};
  const rows = Object.entries(params)
    .filter(([, value]) => value !== "" && value !== null && value !== undefined)
    .map(([name, value]) =>
      h(
        "tr",
        {},
        h("th", { scope: "row" }, name),
        h("td", {}, typeof value === "number" ? number(value) : String(value)),
      ),
    );
  return h(
    "table",
    { class: "params", id: "params" },
    h("caption", { class: "visually-hidden" }, "Parameters"),
    h("tbody", {}, rows),
  );
}

function summary(task, history) {
  const metrics = { ...history.latest, ...task.metrics };
  const device =
    task.assigned_device && task.assigned_device !== task.device
      ? `${task.assigned_device} (asked for ${task.device})`
      : task.assigned_device || task.device;
  const priority =
    task.effective_priority !== task.priority && task.state === "QUEUED"
      ? `${task.priority}, now ${task.effective_priority} after waiting`
      : String(task.priority);
  return definitions(
    [
      ["State", stateBadge(task.state)],
      ["Kind", task.kind],
      ["Device", device],
      ["Priority", priority],
      [
        "Queue position",
        task.state === "QUEUED" && task.queue_position ? `#${task.queue_position}` : "",
      ],
      ["Why it waits", task.state === "QUEUED" ? task.waiting_reason : ""],
      ["Submitted", timeElement(task.create_time)],
      ["Started", task.start_time ? timeElement(task.start_time) : ""],
      ["Ended", task.end_time ? timeElement(task.end_time) : ""],
      ["Ran for", task.start_time ? duration(task.start_time, task.end_time) : ""],
      ["Progress", metrics.progress !== undefined ? percent(metrics.progress) : ""],
      [
        "Speed",
        metrics.images_per_sec !== undefined && metrics.images_per_sec !== null
          ? imagesPerSecond(metrics.images_per_sec)
          : "",
      ],
      ["Preemptions", task.preemptions ? String(task.preemptions) : ""],
      ["Error", task.error],
      [
        "Model file",
        task.model_path || history.modelFile
          ? h("code", {}, task.model_path || history.modelFile)
          : "",
      ],
      [
        "Predictions",
        task.kind === "inference" && task.output_path ? h("code", {}, task.output_path) : "",
      ],
    ],
    { id: "task-summary" },
  );
}

function timeline(history) {
  return history.states.length
    ? h(
        "ol",
        { class: "timeline", id: "timeline" },
        history.states.map((entry) =>
          h(
            "li",
            { "data-state": entry.state },
            timeElement(entry.time),
            " ",
            stateBadge(entry.state),
            " ",
            entry.message,
          ),
        ),
      )
    : h("p", { class: "muted", id: "timeline" }, "No state yet.");
}

// The newest checkpoints are listed; a long run's earlier ones are counted.
const CHECKPOINTS_LISTED = 8;

function checkpoints(task, history) {
  const all = history.checkpoints;
  if (!all.length) return h("p", { class: "muted", id: "checkpoints" }, "None yet.");
  // Checkpoints lie beside the model file (`<task dir>/checkpoints/`); before the model
  // exists only their names are known.
  const folder = task.model_path ? task.model_path.replace(/[^/]*$/, "checkpoints/") : "";
  const shown = all.slice(-CHECKPOINTS_LISTED).reverse();
  return h(
    "div",
    { id: "checkpoints", "data-count": all.length },
    h(
      "p",
      {},
      `${all.length} saved, one per epoch${folder ? " in " : ""}`,
      folder ? h("code", {}, folder) : "",
      ".",
    ),
    h(
      "ul",
      {},
      shown.map((entry) =>
        h(
          "li",
          {},
          h("code", {}, `epoch_${entry.epoch}.pt`),
          " saved ",
          timeElement(entry.time, { short: true }),
        ),
      ),
    ),
    all.length > shown.length
      ? h("p", { class: "muted" }, `and ${all.length - shown.length} earlier`)
      : null,
  );
}

function logLine(event) {
  return h(
    "li",
    { "data-seq": event.seq, class: `level-${event.level}` },
    timeElement(event.time, { short: true }),
    " ",
    h("span", { class: "level" }, event.level),
    " ",
    event.message,
  );
}

export function render(main, params, taskId) {
  const history = new TrainingHistory();
  const problem = notice();
  const header = h("div", { class: "task-header" });
  const details = h("div", { id: "task-details" });
  const paramsHolder = h("div");
  const states = h("div");
  const checkpointList = h("div");
  const charts = trainingCharts();
  const chartSection = h(
    "section",
    { "aria-labelledby": "curves-h", hidden: true },
    h("h2", { id: "curves-h" }, "Curves"),
    charts.element,
  );
  const log = h("ol", { class: "log", id: "log", tabindex: 0, "aria-label": "Log lines" });
  const streamStatus = h("p", {
    class: "muted",
    id: "log-status",
    "data-status": "connecting",
    "data-reconnects": 0,
  });
  fill(
    main,
    header,
    problem.element,
    h(
      "div",
      { class: "columns" },
      h("section", { "aria-labelledby": "about-h" }, h("h2", { id: "about-h" }, "About"), details),
      h(
        "section",
        { "aria-labelledby": "params-h" },
        h("h2", { id: "params-h" }, "Parameters"),
        paramsHolder,
      ),
    ),
    chartSection,
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { "aria-labelledby": "timeline-h" },
        h("h2", { id: "timeline-h" }, "State timeline"),
        states,
      ),
      h(
        "section",
        { "aria-labelledby": "checkpoints-h" },
        h("h2", { id: "checkpoints-h" }, "Checkpoints"),
        checkpointList,
      ),
    ),
    h(
      "section",
      { "aria-labelledby": "log-h" },
      h("h2", { id: "log-h" }, "Log"),
      streamStatus,
      log,
    ),
  );

  let task = null;
  let confirming = false;
  const cancel = async () => {
    confirming = false;
    try {
      const answer = await post(`/api/v2/tasks/${encodeURIComponent(taskId)}/cancel`);
      problem.show(
        answer.state === "CANCELLED"
          ? "Cancelled."
          : "Cancel requested: a running task stops at its next batch.",
        "ok",
      );
    } catch (error) {
      problem.show(`Not cancelled: ${error.detail || error.message}`);
    }
    poller.now();
  };
  const drawHeader = () => {
    const controls = [];
    if (task && !TERMINAL.has(task.state)) {
      if (confirming) {
        controls.push(
          h(
            "span",
            { role: "group", "aria-label": "Confirm cancel", class: "confirm" },
            "Cancel this task? ",
            h(
              "button",
              { type: "button", class: "danger", id: "confirm-cancel", onclick: cancel },
              "Yes, cancel it",
            ),
            " ",
            h(
              "button",
              {
                type: "button",
                onclick: () => {
                  confirming = false;
                  drawHeader();
                },
              },
              "Keep it",
            ),
          ),
        );
      } else {
        controls.push(
          h(
            "button",
            {
              type: "button",
              class: "danger",
              id: "cancel",
              onclick: () => {
                confirming = true;
                drawHeader();
                document.getElementById("confirm-cancel").focus();
              },
            },
            "Cancel task…",
          ),
        );
      }
    }
    fill(
      header,
      h(
        "h1",
        {},
        `${task ? (task.kind === "inference" ? "Inference" : "Training") : "Task"} `,
        h("code", {}, taskId),
        " ",
        task ? stateBadge(task.state) : "",
      ),
      h("div", { class: "actions" }, controls),
    );
  };
  const draw = () => {
    drawHeader();
    if (!task) return;
    document.title = `Tandem · ${task.kind} ${taskId}`;
    fill(details, summary(task, history));
    fill(paramsHolder, paramsTable(task));
    fill(states, timeline(history));
    fill(checkpointList, checkpoints(task, history));
    chartSection.hidden = task.kind !== "training";
  };

  let ended = false;
  const poller = poll(
    async () => {
      if (ended) return;
      task = await get(`/api/v1/tasks/${encodeURIComponent(taskId)}`);
      ended = TERMINAL.has(task.state);
      draw();
    },
    { onError: (error) => problem.show(error.detail || error.message) },
  );

  const stream = new LogStream(taskId, {
    onEvent(event) {
      const changed = history.add(event);
      log.append(logLine(event));
      if (log.childElementCount > LOG_LINES) log.firstElementChild.remove();
      if (changed.epochs || changed.steps) charts.update(history);
      if (changed.states || changed.checkpoints) {
        if (task) draw();
        // A new state: the task's own fields (times, device, error) changed too.
        if (changed.states) {
          ended = false;
          poller.now();
        }
      }
    },
    onStatus(status, reconnects) {
      streamStatus.dataset.status = status;
      streamStatus.dataset.reconnects = String(reconnects);
      streamStatus.textContent = STREAM_STATUS[status] || status;
    },
  }).start();
  charts.update(history);
  return () => {
    poller.stop();
    stream.stop();
  };
}

// The overview: every device with its slots, GPU memory and what runs on it; the queue
// in the order the arbiter admits from, with each task's reason to wait; counts by
// state. Polled every 2 s (the API has no stream of resources).

import { get, listTasks } from "../api.js";
import { fill, h } from "../dom.js";
import { count, duration, gib, imagesPerSecond, percent, timeElement } from "../format.js";
import { poll } from "../poll.js";
import { notice, stateBadge, STATES, table, taskLink, taskSummary } from "../widgets.js";

const LIST_LIMIT = 1000;

/** The devices to show as cards: not the `cuda` group (every GPU) nor, on a cluster, the
 *  `cpu` group (every node's CPU): those are sums of devices shown on their own. */
export function physicalDevices(names) {
  return names.filter((name) => {
    if (name === "cuda") return !names.some((other) => /(^|\/)cuda:\d+$/.test(other));
    if (name === "cpu") return !names.some((other) => other.endsWith("/cpu"));
    return true;
  });
}

function tasksOf(list) {
  return [...list.training_tasks, ...list.inference_tasks];
}

function slotLine(label, running, limit, queued) {
  return h(
    "div",
    { class: "slots" },
    h("span", { class: "slot-label" }, label),
    h("meter", {
      min: 0,
      max: Math.max(limit, 1),
      value: Math.min(running, Math.max(limit, 1)),
      "aria-label": `${label} slots in use`,
    }),
    h(
      "span",
      { class: "slot-figures" },
      `${running} / ${limit} in use`,
      limit === 0 ? " (paused)" : "",
      queued ? `, ${queued} waiting` : "",
    ),
  );
}

// NVML's reading (what every process on the board uses) and the estimates of the jobs
// Tandem admitted there (what admission counts as taken, allocated yet or not) differ
// while a job starts or when something outside Tandem uses the GPU: both are shown.
function memoryBlock(gpu) {
  const total = gpu.total_gb || 1;
  return [
    h(
      "div",
      { class: "memory" },
      h("span", { class: "slot-label" }, "Memory"),
      h("meter", {
        min: 0,
        max: total,
        value: gpu.allocated_gb,
        high: total * 0.9,
        "aria-label": "GPU memory in use",
      }),
      h("span", { class: "slot-figures" }, `${gib(gpu.allocated_gb)} used of ${gib(gpu.total_gb)}`),
    ),
    h(
      "p",
      { class: "memory-note muted" },
      `${gib(gpu.free_gb)} free; ${gib(gpu.estimated_gb ?? 0)} estimated for the tasks admitted here`,
    ),
  ];
}

function runningItem(task) {
  const metrics = task.metrics || {};
  const parts = [taskSummary(task)];
  if (metrics.progress !== undefined) parts.push(percent(metrics.progress));
  if (metrics.images_per_sec !== undefined) parts.push(imagesPerSecond(metrics.images_per_sec));
  parts.push(`for ${duration(task.start_time)}`);
  return h("li", { "data-task": task.task_id }, taskLink(task.task_id), " ", parts.join(" · "));
}

function deviceCard(name, resources, running) {
  const usage = resources.device_usage[name] || {
    training: 0,
    inference: 0,
    queued_training: 0,
    queued_inference: 0,
  };
  const limits = resources.max_concurrent[name] || { training: 0, inference: 0 };
  const gpu = Object.values(resources.gpu_memory_info).find((info) => info.device === name);
  const here = running.filter((task) => task.assigned_device === name);
  const inferenceTasks = here.filter((task) => task.kind === "inference").length;
  const served = usage.inference - inferenceTasks;
  return h(
    "article",
    { class: "device", "data-device": name, "aria-labelledby": `device-${name}` },
    h(
      "h3",
      { id: `device-${name}` },
      name,
      gpu && gpu.name ? h("span", { class: "muted" }, ` ${gpu.name}`) : "",
    ),
    slotLine("Training", usage.training, limits.training, usage.queued_training),
    slotLine("Inference", usage.inference, limits.inference, usage.queued_inference),
    gpu ? memoryBlock(gpu) : null,
    h("h4", {}, "Running here"),
    here.length || served > 0
      ? h(
          "ul",
          { class: "running" },
          here.map(runningItem),
          served > 0
            ? h(
                "li",
                { class: "muted" },
                `${count(served, "inference slot")} held by served models (Predict)`,
              )
            : null,
        )
      : h("p", { class: "muted" }, "Nothing."),
  );
}

/** The arbiter's order: most urgent effective priority first, then the oldest. */
function queueOrder(a, b) {
  return (
    a.effective_priority - b.effective_priority ||
    String(a.create_time).localeCompare(String(b.create_time))
  );
}

function queueTable(queued) {
  const { element, body } = table(
    "Waiting tasks, in the order they are admitted",
    ["Task", "What", "Device", "Priority", "Position", "Waiting", "Why it waits"],
    { id: "queue", class: "data" },
  );
  for (const task of [...queued].sort(queueOrder)) {
    const priority =
      task.effective_priority === task.priority
        ? String(task.priority)
        : `${task.effective_priority} (asked ${task.priority})`;
    body.append(
      h(
        "tr",
        { "data-task": task.task_id },
        h("td", {}, taskLink(task.task_id), " ", stateBadge(task.state)),
        h("td", {}, taskSummary(task)),
        h("td", {}, task.device),
        h("td", { class: "num" }, priority),
        h("td", { class: "num" }, task.queue_position ? `#${task.queue_position}` : "—"),
        h("td", {}, duration(task.create_time)),
        h("td", { class: "reason" }, task.waiting_reason || "—"),
      ),
    );
  }
  if (!queued.length)
    body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "Nothing waits.")));
  return element;
}

export function render(main) {
  const devices = h("div", { class: "devices", id: "devices" });
  const counts = h("ul", { class: "counts", id: "counts" });
  const queue = h("div", { class: "table-wrap", id: "queue-wrap" });
  const updated = h("p", { class: "muted updated" });
  const problem = notice();
  fill(
    main,
    h("h1", {}, "Overview"),
    problem.element,
    updated,
    h(
      "section",
      { "aria-labelledby": "counts-h" },
      h("h2", { id: "counts-h" }, "Tasks by state"),
      counts,
    ),
    h(
      "section",
      { "aria-labelledby": "devices-h" },
      h("h2", { id: "devices-h" }, "Devices"),
      devices,
    ),
    h("section", { "aria-labelledby": "queue-h" }, h("h2", { id: "queue-h" }, "Queue"), queue),
  );

  const refresh = async () => {
    const others = STATES.filter((state) => state !== "RUNNING" && state !== "QUEUED");
    const [resources, running, queued, ...ended] = await Promise.all([
      get("/api/v2/resources"),
      listTasks({ state: "running", limit: LIST_LIMIT }),
      listTasks({ state: "queued,preempted", limit: LIST_LIMIT }),
      ...others.map((state) => listTasks({ state, limit: 1 })),
    ]);
    const runningTasks = tasksOf(running);
    const queuedTasks = tasksOf(queued);
    const totals = { RUNNING: running, QUEUED: null };
    others.forEach((state, i) => (totals[state] = ended[i]));
    // The queue list holds PREEMPTED tasks too (they wait again at once); their own
    // count comes from their own list.
    const total = (list) => list.total_training + list.total_inference;
    totals.QUEUED = { total_training: total(queued) - total(totals.PREEMPTED), total_inference: 0 };
    fill(
      counts,
      STATES.map((state) =>
        h(
          "li",
          { "data-state": state },
          h(
            "a",
            { href: `#/tasks?state=${state.toLowerCase()}` },
            h("span", { class: "count" }, String(total(totals[state]))),
            " ",
            stateBadge(state),
          ),
        ),
      ),
    );
    // Devices in use are the arbiter's pools; limits may also name a group kept for
    // devices not there yet (`cuda` on a machine without a GPU), which gets no card.
    const names = physicalDevices(Object.keys(resources.device_usage).sort());
    fill(
      devices,
      names.map((name) => deviceCard(name, resources, runningTasks)),
    );
    fill(queue, queueTable(queuedTasks));
    fill(
      updated,
      "Updated ",
      timeElement(new Date().toISOString(), { short: true }),
      ` · ${count(resources.preemptions_total, "preemption")} since the server started`,
    );
    problem.clear();
  };
  const poller = poll(refresh, {
    onError: (error) => problem.show(`Cannot refresh: ${error.detail || error.message}`),
  });
  return () => poller.stop();
}

// What a training's log says, gathered as the events arrive: the metrics of each epoch,
// the training loss at each logging step, the states it went through, its checkpoints.
// The task page and the compare page read the same log the same way.

const CHECKPOINT = /^saved checkpoint epoch (\d+)/;
const MODEL = /^saved model (\S+)/;

export class TrainingHistory {
  constructor() {
    this.epochs = []; // {epoch, loss, accuracy, val_loss, val_accuracy, images_per_sec, ...}
    this.steps = []; // {step, epoch, batch, loss, accuracy, images_per_sec}
    this.states = []; // {state, time, message}
    this.checkpoints = []; // {epoch, time}
    this.modelFile = "";
    this.latest = {}; // the newest metrics of any kind
  }

  /** Takes one log event (the JSON of `/logs`); says which parts changed. */
  add(event) {
    const changed = { epochs: false, steps: false, states: false, checkpoints: false };
    if (event.type === "state" && event.state) {
      this.states.push({ state: event.state, time: event.time, message: event.message });
      changed.states = true;
    }
    const metrics = event.metrics || {};
    if (event.type === "metrics" && Object.keys(metrics).length) {
      this.latest = { ...this.latest, ...metrics };
      if ("batch" in metrics) {
        // A step's running figures within its epoch; its place over the whole run is
        // (epoch - 1) * batches + batch.
        const batches = metrics.batches || 0;
        const step = (metrics.epoch - 1) * batches + metrics.batch;
        this.steps.push({ ...metrics, step });
        changed.steps = true;
      } else if ("epoch" in metrics) {
        // A resumed run reports an epoch again: the later figures replace the earlier.
        const at = this.epochs.findIndex((e) => e.epoch === metrics.epoch);
        if (at >= 0) this.epochs[at] = { ...metrics };
        else this.epochs.push({ ...metrics });
        changed.epochs = true;
      }
    }
    const checkpoint = CHECKPOINT.exec(event.message || "");
    if (checkpoint) {
      this.checkpoints.push({ epoch: Number(checkpoint[1]), time: event.time });
      changed.checkpoints = true;
    }
    const model = MODEL.exec(event.message || "");
    if (model) this.modelFile = model[1];
    return changed;
  }

  /** [x, y] points of an epoch metric (`loss`, `val_accuracy`, ...), finite values only. */
  epochSeries(name) {
    return this.epochs.filter((e) => Number.isFinite(e[name])).map((e) => [e.epoch, e[name]]);
  }

  /** [step, loss] of every logging step. */
  stepSeries(name = "loss") {
    return this.steps.filter((s) => Number.isFinite(s[name])).map((s) => [s.step, s[name]]);
  }
}

// The charts of one training: loss and accuracy per epoch (training and validation) and
// the training loss at each logging step, redrawn at most once a frame as events come.

import { LineChart } from "./chart.js";
import { h } from "./dom.js";
import { number, percent } from "./format.js";

export const lossFormat = (v) => number(v, { digits: 3 });
export const accuracyFormat = (v) => percent(v);

/** The charts of a training task, fed by `update(history)` (a TrainingHistory). */
export function trainingCharts() {
  const loss = new LineChart({
    title: "Loss per epoch",
    x: "Epoch",
    y: "Loss",
    yFormat: lossFormat,
    id: "chart-loss",
  });
  const accuracy = new LineChart({
    title: "Accuracy per epoch",
    x: "Epoch",
    y: "Accuracy",
    yFormat: accuracyFormat,
    id: "chart-accuracy",
  });
  const steps = new LineChart({
    title: "Training loss per logging step",
    x: "Step",
    y: "Loss",
    yFormat: lossFormat,
    id: "chart-steps",
  });
  let pending = null;
  let latest = null;
  const draw = () => {
    pending = null;
    const history = latest;
    loss.update([
      { name: "loss", label: "training", points: history.epochSeries("loss"), colour: 0 },
      {
        name: "val_loss",
        label: "validation",
        points: history.epochSeries("val_loss"),
        colour: 1,
        dashed: true,
      },
    ]);
    accuracy.update([
      { name: "accuracy", label: "training", points: history.epochSeries("accuracy"), colour: 0 },
      {
        name: "val_accuracy",
        label: "validation",
        points: history.epochSeries("val_accuracy"),
        colour: 1,
        dashed: true,
      },
    ]);
    steps.update([
      {
        name: "step_loss",
        label: "training (running mean of the epoch)",
        points: history.stepSeries("loss"),
        colour: 2,
      },
    ]);
  };
  return {
    element: h("div", { class: "charts" }, loss.element, accuracy.element, steps.element),
    update(history) {
      latest = history;
      // Events come in bursts (a whole history at once): draw once per frame.
      if (pending === null) pending = requestAnimationFrame(draw);
    },
  };
}

// A small SVG line chart: a few series over a shared x axis, redrawn whole when its data
// change (a training has tens of epochs and a few thousand steps, well within what an
// SVG redraw handles at once). Colours come from the style sheet (`.series-N`), so the
// chart follows light and dark mode.

import { h, s } from "./dom.js";
import { number } from "./format.js";

// The drawing is sized to the figure's own width, so that text stays at its CSS size
// whatever the column's width (a fixed viewBox would shrink it on narrow columns).
const WIDTH = 640;
const HEIGHT = 240;
const MARGIN = { top: 12, right: 16, bottom: 40, left: 64 };
const COLOURS = 8;

/** Round tick values covering [low, high]: 1, 2 or 5 times a power of ten apart. */
export function ticks(low, high, wanted = 5) {
  if (!(high > low)) return [low];
  const raw = (high - low) / wanted;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= raw);
  const first = Math.ceil(low / step) * step;
  const values = [];
  for (let value = first; value <= high + step * 1e-9; value += step) {
    values.push(Number(value.toPrecision(12)));
  }
  return values;
}

/** [low, high] of `values`; `pad`: a share of the range added at both ends, so that
 *  points at the extremes do not sit on the axes. */
function extent(values, { pad = 0 } = {}) {
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (low === high) {
    const room = Math.abs(low) * 0.1 || 1;
    return [low - room, high + room];
  }
  const room = (high - low) * pad;
  return [low - room, high + room];
}

export class LineChart {
  /** `title`: the figure's caption; `x`/`y`: axis labels; `yFormat(v)`: tick text;
   *  `integerX`: x is a count (epochs, steps). */
  constructor({ title, x, y, yFormat = (v) => number(v), integerX = true, id = "" }) {
    this.options = { title, x, y, yFormat, integerX };
    this.svg = s("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      preserveAspectRatio: "xMidYMid meet",
      "aria-label": title,
    });
    this.legend = h("ul", { class: "legend" });
    this.element = h(
      "figure",
      { class: "chart", id: id || null },
      h("figcaption", {}, title),
      this.svg,
      this.legend,
    );
    this.series = [];
    this.width = WIDTH;
    new ResizeObserver(() => {
      const width = Math.round(this.svg.getBoundingClientRect().width);
      if (width > 0 && Math.abs(width - this.width) > 1) {
        this.width = width;
        this.draw();
      }
    }).observe(this.element);
  }

  /** `series`: [{name, label, points: [[x, y], ...], colour: 0..7, dashed}]. */
  update(series) {
    this.series = series;
    this.draw();
  }

  draw() {
    const { x: xLabel, y: yLabel, yFormat, integerX } = this.options;
    const svg = this.svg;
    const WIDTH = this.width;
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    svg.replaceChildren();
    const points = this.series.flatMap((one) => one.points);
    this.legend.replaceChildren(
      ...this.series.map((one) =>
        h(
          "li",
          { class: `series-${(one.colour ?? 0) % COLOURS}${one.dashed ? " dashed" : ""}` },
          h("span", { class: "swatch", "aria-hidden": "true" }),
          `${one.label} (${one.points.length} ${one.points.length === 1 ? "point" : "points"})`,
        ),
      ),
    );
    const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
    const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
    if (!points.length) {
      svg.append(
        s(
          "text",
          { x: WIDTH / 2, y: HEIGHT / 2, class: "empty", "text-anchor": "middle" },
          "no points yet",
        ),
      );
      this.describe([]);
      return;
    }
    const [x0, x1] = extent(points.map((p) => p[0]));
    const [y0, y1] = extent(
      points.map((p) => p[1]),
      { pad: 0.06 },
    );
    const px = (v) => MARGIN.left + ((v - x0) / (x1 - x0)) * plotWidth;
    const py = (v) => MARGIN.top + plotHeight - ((v - y0) / (y1 - y0)) * plotHeight;

    const axes = s("g", { class: "axes" });
    for (const value of ticks(y0, y1)) {
      axes.append(
        s("line", {
          class: "grid",
          x1: MARGIN.left,
          x2: WIDTH - MARGIN.right,
          y1: py(value),
          y2: py(value),
        }),
        s(
          "text",
          { x: MARGIN.left - 6, y: py(value), "text-anchor": "end", "dominant-baseline": "middle" },
          yFormat(value),
        ),
      );
    }
    const xTicks = ticks(x0, x1, 6).filter((v) => !integerX || Number.isInteger(v));
    for (const value of xTicks) {
      axes.append(
        s("line", {
          class: "tick",
          x1: px(value),
          x2: px(value),
          y1: MARGIN.top + plotHeight,
          y2: MARGIN.top + plotHeight + 4,
        }),
        s(
          "text",
          { x: px(value), y: MARGIN.top + plotHeight + 16, "text-anchor": "middle" },
          number(value),
        ),
      );
    }
    axes.append(
      s("line", {
        class: "axis",
        x1: MARGIN.left,
        x2: WIDTH - MARGIN.right,
        y1: MARGIN.top + plotHeight,
        y2: MARGIN.top + plotHeight,
      }),
      s("line", {
        class: "axis",
        x1: MARGIN.left,
        x2: MARGIN.left,
        y1: MARGIN.top,
        y2: MARGIN.top + plotHeight,
      }),
      s(
        "text",
        { class: "label", x: MARGIN.left + plotWidth / 2, y: HEIGHT - 6, "text-anchor": "middle" },
        xLabel,
      ),
      s(
        "text",
        {
          class: "label",
          x: 14,
          y: MARGIN.top + plotHeight / 2,
          "text-anchor": "middle",
          transform: `rotate(-90 14 ${MARGIN.top + plotHeight / 2})`,
        },
        yLabel,
      ),
    );
    svg.append(axes);

    for (const one of this.series) {
      const group = s("g", {
        class: `series series-${(one.colour ?? 0) % COLOURS}${one.dashed ? " dashed" : ""}`,
        "data-name": one.name,
        "data-points": one.points.length,
        "data-last-x": one.points.length ? one.points[one.points.length - 1][0] : null,
      });
      if (one.points.length > 1) {
        const path = one.points
          .map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`)
          .join(" ");
        group.append(s("polyline", { points: path }));
      }
      // Markers where points are few enough to tell apart (epochs, not steps).
      if (one.points.length <= 60) {
        for (const [x, y] of one.points) {
          group.append(
            s(
              "circle",
              { cx: px(x), cy: py(y), r: 3 },
              s("title", {}, `${one.label}: ${yFormat(y)} at ${xLabel.toLowerCase()} ${number(x)}`),
            ),
          );
        }
      }
      svg.append(group);
    }
    this.describe(this.series);
  }

  /** The chart in words, for screen readers: each series' newest point. */
  describe(series) {
    const { title, x, yFormat } = this.options;
    const parts = series
      .filter((one) => one.points.length)
      .map((one) => {
        const [lastX, lastY] = one.points[one.points.length - 1];
        return `${one.label} ${yFormat(lastY)} at ${x.toLowerCase()} ${number(lastX)}`;
      });
    this.svg.setAttribute(
      "aria-label",
      parts.length ? `${title}: ${parts.join("; ")}` : `${title}: no points yet`,
    );
  }
}

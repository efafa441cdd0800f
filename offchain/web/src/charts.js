// The rental page's charts, drawn by uPlot: the usage over the applied on-chain reports and the live per-GPU
// telemetry between checkpoints. Every chart drawn is kept in `plots` by name, so that a test (or a reader in the
// console) can see what data each one holds.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { METRICS, telemetryColumns, usageColumns } from "./telemetry.js";

const COLORS = { util: "#2563eb", utilFill: "rgba(37, 99, 235, 0.15)", delivered: "#ea580c", elapsed: "#94a3b8" };
const GPU_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777"];
const USAGE_HEIGHT = 300;
const TELEMETRY_HEIGHT = 200;

/** The uPlot instances on the page, by name ("usage", and "telemetry:<metric key>"). */
export const plots = {};

/** Time axis steps of whole seconds (uPlot's default goes down to milliseconds for a short span). */
const X_AXIS = { incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400] };

function widthOf(node) {
  return Math.max(240, node.clientWidth);
}

function resizeWith(node, plot, height) {
  const observer = new ResizeObserver(() => plot.setSize({ width: widthOf(node), height }));
  observer.observe(node);
  return observer;
}

/** Utilisation (left axis, %, a step per report period) and delivered against elapsed seconds (right axis). */
export class UsageChart {
  constructor(node) {
    this.node = node;
    this.plot = null;
  }

  /** Draws `rental` (an api/rentals/<id> body); `node.dataset.points` says how many reports it shows. */
  update(rental) {
    const c = usageColumns(rental);
    const data = [c.x, c.util, c.delivered, c.elapsed];
    this.node.dataset.points = String(c.x.length);
    if (this.plot !== null) {
      this.plot.setData(data);
      return;
    }
    const seconds = (_, ticks) => ticks.map((t) => t + " s");
    this.plot = new uPlot({
      width: widthOf(this.node),
      height: USAGE_HEIGHT,
      scales: { x: { time: true }, pct: { range: [0, 100] }, s: { range: (_, min, max) => [0, Math.max(10, max)] } },
      axes: [
        X_AXIS,
        { scale: "pct", values: (_, ticks) => ticks.map((t) => t + "%") },
        { scale: "s", side: 1, values: seconds, grid: { show: false } },
      ],
      series: [
        { label: "period end" },
        { label: "GPU utilisation", scale: "pct", stroke: COLORS.util, fill: COLORS.utilFill, width: 2,
          paths: uPlot.paths.stepped({ align: 1 }), value: (_, v) => (v === null ? "—" : v.toFixed(1) + "%") },
        { label: "delivered seconds", scale: "s", stroke: COLORS.delivered, width: 2.5, points: { show: true } },
        { label: "elapsed seconds", scale: "s", stroke: COLORS.elapsed, width: 1.5, dash: [5, 4] },
      ],
    }, data, this.node);
    plots.usage = this.plot;
    resizeWith(this.node, this.plot, USAGE_HEIGHT);
  }
}

/** One chart per metric (utilisation, memory, power, temperature), one series per GPU in each. */
export class TelemetryCharts {
  constructor(node) {
    this.node = node;
    this.gpus = null;
    this.plots = {};
  }

  /** Draws `points` (the held telemetry points, oldest first); rebuilds the charts when the set of GPUs changes. */
  update(points) {
    const columns = telemetryColumns(points);
    this.node.dataset.points = String(columns.x.length);
    const key = columns.gpus.join(",");
    if (this.gpus !== key) this._build(columns);
    for (const metric of METRICS) this.plots[metric.key].setData([columns.x, ...columns.series[metric.key]]);
  }

  _build(columns) {
    for (const [name, plot] of Object.entries(this.plots)) {
      plot.destroy();
      delete plots["telemetry:" + name];
    }
    this.plots = {};
    this.node.replaceChildren();
    this.gpus = columns.gpus.join(",");
    for (const metric of METRICS) {
      const box = document.createElement("div");
      box.className = "telemetry-chart";
      box.dataset.metric = metric.key;
      const title = document.createElement("h3");
      title.textContent = metric.title + " (" + metric.unit + ")";
      box.append(title);
      this.node.append(box);
      const format = (_, v) => (v === null || v === undefined ? "—" : (+v.toFixed(1)) + " " + metric.unit);
      const plot = new uPlot({
        width: widthOf(box),
        height: TELEMETRY_HEIGHT,
        scales: { x: { time: true }, y: metric.key === "util_pct" ? { range: [0, 100] } : {} },
        axes: [X_AXIS, { size: 64 }],
        series: [
          { label: "period end" },
          ...columns.gpus.map((uuid, i) => ({
            label: "GPU " + i + " · " + (uuid.length > 16 ? uuid.slice(0, 15) + "…" : uuid),
            stroke: GPU_COLORS[i % GPU_COLORS.length], width: 1.5, value: format })),
        ],
      }, [columns.x, ...columns.series[metric.key]], box);
      this.plots[metric.key] = plot;
      plots["telemetry:" + metric.key] = plot;
      resizeWith(box, plot, TELEMETRY_HEIGHT);
    }
  }
}

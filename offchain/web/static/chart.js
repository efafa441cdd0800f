// The rental page's chart, drawn on a canvas: each applied report's average GPU utilisation over its period
// (left axis, %) and the rental's total delivered seconds at the end of each period against the seconds elapsed
// (right axis). The canvas's data-points attribute holds the number of reports drawn.
"use strict";

const usageChart = (() => {
  const COLORS = { util: "#2563eb", utilFill: "rgba(37, 99, 235, 0.15)", delivered: "#ea580c", elapsed: "#94a3b8",
                   grid: "#e2e8f0", text: "#64748b" };
  const MARGIN = { left: 56, right: 70, top: 36, bottom: 34 };

  /** The smallest "round" number (1, 2 or 5 times a power of ten) at or above `value`. */
  function niceCeil(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    return [1, 2, 5, 10].map((m) => m * power).find((n) => n >= value);
  }

  function setup(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    return { ctx, width, height };
  }

  function legend(ctx, x, y) {
    const items = [["GPU utilisation (%)", COLORS.util, []], ["delivered seconds", COLORS.delivered, []],
                   ["elapsed seconds", COLORS.elapsed, [5, 4]]];
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    for (const [label, color, dash] of items) {
      ctx.strokeStyle = color;
      ctx.lineWidth = 2.5;
      ctx.setLineDash(dash);
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + 22, y);
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = COLORS.text;
      ctx.fillText(label, x + 28, y);
      x += 40 + ctx.measureText(label).width;
    }
  }

  /** Draws `rental` (an api/rentals/<id> body) on `canvas`. */
  function draw(canvas, rental) {
    const { ctx, width, height } = setup(canvas);
    const reports = rental.reports;
    const plot = { x0: MARGIN.left, x1: width - MARGIN.right, y0: height - MARGIN.bottom, y1: MARGIN.top };
    const start = rental.since;
    const reported = reports.length ? reports[reports.length - 1].covered_until : start;
    const end = Math.max(reported, start + 10);
    const cumulative = reports.map((r) => r.total_delivered_seconds);
    const delivered = cumulative.length ? cumulative[cumulative.length - 1] : 0;
    const secondsMax = 4 * niceCeil(Math.max(reported - start, delivered) / 4);  // four round steps
    const x = (t) => plot.x0 + (t - start) / (end - start) * (plot.x1 - plot.x0);
    const yUtil = (pct) => plot.y0 - pct / 100 * (plot.y0 - plot.y1);
    const ySeconds = (s) => plot.y0 - s / secondsMax * (plot.y0 - plot.y1);

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.text;
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = plot.y0 - i / 4 * (plot.y0 - plot.y1);
      ctx.beginPath();
      ctx.moveTo(plot.x0, y);
      ctx.lineTo(plot.x1, y);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText(i * 25 + "%", plot.x0 - 8, y);
      ctx.textAlign = "left";
      ctx.fillText(i / 4 * secondsMax + " s", plot.x1 + 8, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let i = 0; i <= 4; i++) {
      const t = start + i / 4 * (end - start);
      ctx.fillText(gpuex.clock(Math.round(t)), x(t), plot.y0 + 8);
    }
    legend(ctx, plot.x0, 14);

    if (!reports.length) {
      ctx.fillStyle = COLORS.text;
      ctx.font = "14px system-ui, sans-serif";
      ctx.textBaseline = "middle";
      ctx.fillText("No usage report applied yet", (plot.x0 + plot.x1) / 2, (plot.y0 + plot.y1) / 2);
      canvas.dataset.points = "0";
      return;
    }

    // Utilisation: a step per report period, filled down to the axis.
    const steps = [];
    for (const r of reports) {
      const util = r.utilisation === null ? 0 : r.utilisation * 100;
      steps.push([x(r.period_start), yUtil(util)], [x(r.covered_until), yUtil(util)]);
    }
    ctx.fillStyle = COLORS.utilFill;
    ctx.beginPath();
    ctx.moveTo(steps[0][0], plot.y0);
    for (const [px, py] of steps) ctx.lineTo(px, py);
    ctx.lineTo(steps[steps.length - 1][0], plot.y0);
    ctx.closePath();
    ctx.fill();
    ctx.strokeStyle = COLORS.util;
    ctx.lineWidth = 2;
    ctx.beginPath();
    steps.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
    ctx.stroke();

    // Elapsed seconds: what full delivery would have reached.
    ctx.strokeStyle = COLORS.elapsed;
    ctx.setLineDash([5, 4]);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(x(start), ySeconds(0));
    ctx.lineTo(x(reported), ySeconds(reported - start));
    ctx.stroke();
    ctx.setLineDash([]);

    // Delivered seconds, accumulated at the end of each period.
    ctx.strokeStyle = COLORS.delivered;
    ctx.fillStyle = COLORS.delivered;
    ctx.lineWidth = 2.5;
    ctx.beginPath();
    ctx.moveTo(x(start), ySeconds(0));
    reports.forEach((r, i) => ctx.lineTo(x(r.covered_until), ySeconds(cumulative[i])));
    ctx.stroke();
    reports.forEach((r, i) => {
      ctx.beginPath();
      ctx.arc(x(r.covered_until), ySeconds(cumulative[i]), 3, 0, 2 * Math.PI);
      ctx.fill();
    });
    canvas.dataset.points = String(reports.length);
  }

  return { draw, COLORS };
})();

// The live per-GPU telemetry the page's oracle holds between on-chain checkpoints
// (`GET api/rentals/<id>/telemetry?since=<seq>`), kept as the page receives it and turned into chart columns.
// Pure functions, no DOM: the charts (charts.js) draw what these return.

/** The metrics charted per GPU: the field of a point's GPU entry, its title and its unit. */
export const METRICS = [
  { key: "util_pct", title: "GPU utilisation", unit: "%" },
  { key: "mem_used_mib", title: "Memory used", unit: "MiB" },
  { key: "power_w", title: "Power", unit: "W" },
  { key: "temp_c", title: "Temperature", unit: "°C" },
];

/** At most this many periods are kept (an hour of one-second reports); older ones drop off the left. */
export const MAX_POINTS = 3600;

/**
 * `held` (points oldest first) with the points of a fresh answer added: a point whose seq is already held
 * replaces it (an oracle may have learnt more of a period), the result stays sorted by seq and keeps the last
 * `limit` points.
 */
export function mergePoints(held, fresh, limit = MAX_POINTS) {
  const bySeq = new Map(held.map((point) => [point.seq, point]));
  for (const point of fresh) bySeq.set(point.seq, point);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq).slice(-limit);
}

/**
 * Chart columns of `points`: `x` the end of each period (unix seconds), `gpus` the GPU UUIDs in the order they
 * were first seen, and per metric key one column per GPU, aligned with `x` (null where the GPU has no value in a
 * period, which the charts draw as a gap).
 */
export function telemetryColumns(points) {
  const gpus = [];
  for (const point of points) {
    for (const gpu of point.gpus) if (!gpus.includes(gpu.uuid)) gpus.push(gpu.uuid);
  }
  const x = points.map((point) => point.covered_until);
  const series = {};
  for (const { key } of METRICS) {
    series[key] = gpus.map((uuid) =>
      points.map((point) => {
        const gpu = point.gpus.find((g) => g.uuid === uuid);
        return gpu === undefined || gpu[key] === null || gpu[key] === undefined ? null : gpu[key];
      }));
  }
  return { x, gpus, series };
}

/**
 * Chart columns of a rental's applied reports (an api/rentals/<id> body): `x` the end of each report's period,
 * `util` its average GPU utilisation in per cent (the API's `utilisation` is a fraction; null where it delivered
 * nothing), `delivered` the rental's total delivered
 * seconds at that end and `elapsed` the seconds since the rental's start (what full delivery would reach).
 */
export function usageColumns(rental) {
  const reports = rental.reports;
  return {
    x: reports.map((r) => r.covered_until),
    util: reports.map((r) => (r.utilisation === null ? null : r.utilisation * 100)),
    delivered: reports.map((r) => r.total_delivered_seconds),
    elapsed: reports.map((r) => r.covered_until - rental.since),
  };
}

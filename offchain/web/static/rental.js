// The rental page: amounts, settlement and the usage chart of api/rentals/<id>, redrawn as reports land; the live
// per-GPU telemetry the page's oracle holds between checkpoints, refreshed on every index event and every few
// seconds while the rental runs; the job's state by the chain and, for the connected renter, the job's status and
// logs from the provider's agent, read with requests the renter's wallet signs. Text from the agent or the job
// (logs, reasons) is only ever set as text.
"use strict";

(() => {
  const { el, api, duration, time, providerLink, badge, card } = gpuex;
  const { UsageChart, TelemetryCharts, RenterSession, AgentError, checkedAgent, mergePoints } = gpuexRental;
  const rentalId = new URLSearchParams(location.search).get("id") || "";
  const REPORT_ROWS = 50;
  const TELEMETRY_POLL_MS = 5_000;
  const TELEMETRY_PAGES = 10;
  const LOG_RETRY_MS = 5_000;
  const MAX_LOG_CHUNKS = 5_000;
  const usage = new UsageChart(document.getElementById("chart"));
  const telemetry = new TelemetryCharts(document.getElementById("telemetry"));
  let shown = null;
  let points = [];
  let telemetryPending = null;
  let telemetryTimer = null;

  function render(r) {
    const s = r.settlement;
    const started = r.started_at !== null;
    const elapsed = started ? Math.max(0, Math.min(Date.now() / 1000, r.ends_at) - r.since) : 0;
    document.title = "gpuex market · rental " + r.rental_id;
    document.getElementById("rental-id").textContent = r.rental_id;
    document.getElementById("status").replaceChildren(badge(r.status));
    document.getElementById("what").replaceChildren(
      r.gpu_count + " × " + r.gpu_model + " on offer #" + r.offer_id + " from provider ", providerLink(r.provider),
      " · rented by ", el("span", { class: "mono", title: r.renter }, gpuex.short(r.renter)));
    document.getElementById("cards").replaceChildren(
      card("Deposit", r.display.deposit, r.display.booked_duration + " at " + r.display.price_per_hour),
      card("Earned", r.display.paid, s ? "settled" : "by the applied reports"),
      card("Claimed", r.display.claimed,
           s ? "by the provider while it ran" : r.display.claimable + " claimable now"),
      card("Refunded", r.display.refunded, s ? "to the renter" : "so far"),
      card("Delivered", r.display.delivered_seconds,
           s ? s.display.missed_seconds + " missed"
             : started ? "of " + duration(Math.round(elapsed)) + " elapsed" : "not started"),
      card("Covered until", r.covered_until === null ? "—" : time(r.covered_until), "by the applied reports"),
      card("GPU utilisation", r.display.utilisation, "over every delivered second"),
      card("Slashed", s ? s.display.slashed : "—", s ? s.display.slash_reason : "settles at the end",
           s !== null && Number(s.slashed) > 0),
      s ? card("Ended", time(s.settled_at), "settled " + s.status.replace("_", " "))
        : card("Ends", started ? time(r.ends_at) : "—",
               started ? r.display.duration + " rented" : "waiting for the start"));

    const timeline = [["Opened", time(r.opened_at)]];
    if (started) timeline.push(["Started", time(r.started_at) + (r.started_by_report ? " (by its first report)" : "")]);
    if (r.terminated_at !== null) timeline.push(["Terminated", time(r.terminated_at) + " by the renter"]);
    if (r.decline_reason !== null) timeline.push(["Declined", "by the provider: " + r.decline_detail]);
    if (s) {
      timeline.push(["Settled", time(s.settled_at) + ": " + s.status.replace("_", " ")]);
      timeline.push(["Settlement", s.display.provider_payout + " to the provider in all, " + s.display.fee +
                     " fee, " + s.display.refund + " refunded"]);
      if (Number(s.slashed) > 0) {
        timeline.push(["Slash", s.display.slashed + " of the provider's collateral to the renter (" +
                       s.display.slash_reason + ")"]);
      }
    }
    for (const k of r.skipped) timeline.push(["Report #" + k.seq, "skipped: " + k.reason.replaceAll("_", " ")]);
    timeline.push(["Job spec hash", el("code", null, r.job_spec_hash)]);
    document.getElementById("timeline").replaceChildren(
      ...timeline.flatMap(([term, value]) => [el("dt", null, term), el("dd", null, value)]));

    const rows = r.reports.slice(-REPORT_ROWS).reverse().map((p) => [
      p.seq, time(p.covered_until), p.display.delivered_seconds, p.display.utilisation, p.display.earned]);
    gpuex.fillTable(document.getElementById("reports"), rows, [0, 2, 3, 4], document.getElementById("reports-empty"));
    document.getElementById("reports-note").textContent =
      r.reports.length > REPORT_ROWS ? `(the latest ${REPORT_ROWS} of ${r.reports.length})` : "";
    usage.update(r);
    document.getElementById("job-chain").textContent = jobByChain(r);
  }

  /** The job's state as the chain and the index tell it, for everyone. */
  function jobByChain(r) {
    const s = r.settlement;
    if (r.decline_reason !== null) return "Declined by the provider's agent: " + r.decline_detail + ".";
    if (s) return "Ended: the rental settled " + s.status.replace("_", " ") + " at " + time(s.settled_at) + ".";
    if (r.terminated_at !== null) return "Terminated by the renter at " + time(r.terminated_at) + "; settles next.";
    if (r.started_at === null) return "Opened: waiting for the provider's agent to start the job.";
    return "Running since " + time(r.started_at) + " on " + r.gpu_count + " GPUs; reports cover it until " +
           time(r.covered_until) + ".";
  }

  // ------------------------------------------------------------------------------------- live telemetry

  /** Fetches the telemetry points newer than those held and redraws; one fetch at a time. */
  function refreshTelemetry() {
    if (telemetryPending === null) telemetryPending = fetchTelemetry().finally(() => { telemetryPending = null; });
    return telemetryPending;
  }

  async function fetchTelemetry() {
    const note = document.getElementById("telemetry-note");
    const empty = document.getElementById("telemetry-empty");
    try {
      // An answer holds a bounded number of periods: ask again until the oracle's latest is held.
      for (let asked = 0; asked < TELEMETRY_PAGES; asked++) {
        const since = points.length ? "?since=" + points[points.length - 1].seq : "";
        const body = await api("api/rentals/" + encodeURIComponent(rentalId) + "/telemetry" + since);
        points = mergePoints(points, body.points);
        if (!body.points.length || body.latest_seq === null || points[points.length - 1].seq >= body.latest_seq) break;
      }
    } catch (error) {
      if (error instanceof gpuex.ApiError && (error.status === 404 || error.status === 503)) {
        if (!points.length) {
          empty.textContent = "No live telemetry from this oracle.";
          empty.hidden = false;
        }
        return;
      }
      note.textContent = "(cannot refresh: " + error.message + ")";
      return;
    }
    empty.hidden = points.length > 0;
    empty.textContent = "No telemetry held for this rental yet.";
    note.textContent = points.length
      ? "(" + points.length + " periods, the latest up to " + time(points[points.length - 1].covered_until) + ")" : "";
    if (points.length) telemetry.update(points);
  }

  /** Polls the telemetry while the rental runs (besides the index events). */
  function pollTelemetry(running) {
    if (running && telemetryTimer === null) telemetryTimer = setInterval(refreshTelemetry, TELEMETRY_POLL_MS);
    if (!running && telemetryTimer !== null) {
      clearInterval(telemetryTimer);
      telemetryTimer = null;
    }
  }

  // ------------------------------------------------------------------------------------- the renter's view

  const renter = {
    panel: document.getElementById("renter"),
    button: document.getElementById("renter-show"),
    error: document.getElementById("renter-error"),
    status: document.getElementById("job-status"),
    logs: document.getElementById("logs"),
    session: null,
    offset: 0,
  };

  /** Shows the renter's part while the connected account (the wallet bar's) is the rental's renter. */
  function offerRenterView() {
    if (shown === null || renter.session !== null) return;
    const account = gpuexLib.connectedAccount();
    const isRenter = account !== null && account.toLowerCase() === shown.renter.toLowerCase();
    renter.panel.hidden = !isRenter;
    document.getElementById("renter-note").textContent = isRenter
      ? "Your wallet holds this rental's renter: it signs each request to the provider's agent, which answers " +
        "your browser directly (this page's server sees neither the requests nor the logs)."
      : "";
  }

  function renterFailed(error) {
    renter.error.textContent = error instanceof AgentError || error instanceof gpuex.ApiError
      ? error.message : "the wallet or the agent failed: " + (error.shortMessage || error.message || error);
    renter.error.hidden = false;
  }

  async function startRenterView() {
    renter.button.disabled = true;
    renter.error.hidden = true;
    try {
      const provider = await api("api/providers/" + shown.provider);
      if (!provider.agent_url) throw new AgentError(0, "no_agent_url", "the provider has not published its agent's URL");
      if (!["http:", "https:"].includes(new URL(provider.agent_url).protocol)) {
        throw new AgentError(0, "bad_agent_url", "the provider's agent URL is not http or https");
      }
      await checkedAgent(provider.agent_url, provider.agent);
      renter.session = new RenterSession(provider.agent_url, rentalId);
      await showJobStatus();
      renter.button.hidden = true;
      followLogs();
    } catch (error) {
      renterFailed(error);
      renter.session = null;
      renter.button.disabled = false;
    }
  }

  async function showJobStatus() {
    const s = await renter.session.status();
    const rows = [
      ["Phase", s.phase],
      ["Job spec", s.spec_received ? "received" : "not received yet: upload it (gpuex rental spec)"],
      ["Image", s.image ?? "—"],
      ["GPUs", s.gpus.length ? s.gpus.join(", ") : "—"],
      ["Container", s.container ? s.container.name + " (" + s.container.state + ")" : "—"],
      ["Exit code", s.exit_code ?? "—"],
      ["Failure reason", s.reason ?? "—"],
      ["Result digest", s.result_digest ? el("code", null, s.result_digest) : "—"],
    ];
    if (s.decline_reason) rows.push(["Declined", s.decline_detail || s.decline_reason]);
    renter.status.replaceChildren(...rows.flatMap(([term, value]) => [el("dt", null, term), el("dd", null, value)]));
    renter.status.hidden = false;
  }

  function appendLog(entry) {
    const pane = renter.logs;
    const atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
    pane.append(el("span", entry.stream === "stderr" ? { class: "stderr" } : null, entry.data));
    while (pane.childNodes.length > MAX_LOG_CHUNKS) pane.firstChild.remove();
    if (atBottom) pane.scrollTop = pane.scrollHeight;
  }

  /** Follows the log from where it got to; a dropped stream is signed again and resumed while the rental runs. */
  async function followLogs() {
    document.getElementById("logs-title").hidden = false;
    renter.logs.hidden = false;
    const note = document.getElementById("logs-note");
    for (;;) {
      let end = null;
      note.textContent = "(following)";
      try {
        renter.offset = await renter.session.followLogs(renter.offset, (entry) => {
          if (entry.end) end = entry;
          else appendLog(entry);
        });
      } catch (error) {
        if (error instanceof AgentError && error.status >= 400 && error.status < 500 && error.status !== 401) {
          renterFailed(error);
          note.textContent = "";
          return;
        }
        note.textContent = "(interrupted: " + error.message + ")";
      }
      if (end !== null) {
        note.textContent = "(the job ended" + (end.exit_code === null ? "" : " with exit code " + end.exit_code) + ")";
        await showJobStatus().catch(renterFailed);
        return;
      }
      if (shown && !shown.live) {
        note.textContent = "(the rental ended)";
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, LOG_RETRY_MS));
    }
  }

  renter.button.addEventListener("click", startRenterView);
  window.addEventListener("gpuex:account", offerRenterView);

  async function refresh() {
    const error = document.getElementById("error");
    try {
      const rental = await api("api/rentals/" + encodeURIComponent(rentalId));
      error.hidden = true;
      const first = shown === null;
      shown = rental;
      render(rental);
      pollTelemetry(rental.live);
      if (first) offerRenterView();
    } catch (e) {
      gpuex.showError(error, e);
    }
    await refreshTelemetry();
  }

  gpuex.live(refresh);
})();

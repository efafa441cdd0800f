// The rental page: amounts, settlement and the usage chart of api/rentals/<id>, redrawn as reports land.
"use strict";

(() => {
  const { el, api, duration, time, providerLink, badge, card } = gpuex;
  const rentalId = new URLSearchParams(location.search).get("id") || "";
  const canvas = document.getElementById("chart");
  const REPORT_ROWS = 50;
  let shown = null;

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
    usageChart.draw(canvas, r);
  }

  async function refresh() {
    const error = document.getElementById("error");
    try {
      const rental = await api("api/rentals/" + encodeURIComponent(rentalId));
      error.hidden = true;
      shown = rental;
      render(rental);
    } catch (e) {
      gpuex.showError(error, e);
    }
  }

  window.addEventListener("resize", () => { if (shown) usageChart.draw(canvas, shown); });
  gpuex.live(refresh);
})();

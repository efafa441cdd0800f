// The rental page: amounts, settlement and the usage chart of api/rentals/<id>, redrawn as reports land.
"use strict";

(() => {
  const { el, api, amount, duration, time, providerLink, badge, card } = gpuex;
  const rentalId = new URLSearchParams(location.search).get("id") || "";
  const canvas = document.getElementById("chart");
  const REPORT_ROWS = 50;
  let shown = null;

  function render(r, info) {
    const pay = info.payment_token.symbol;
    const stake = info.stake_token.symbol;
    const s = r.settlement;
    const started = r.started_at !== null;
    const elapsed = started ? Math.max(0, Math.min(Date.now() / 1000, r.ends_at) - r.since) : 0;
    const util = r.util_pct === null ? "—" : r.util_pct.toFixed(1) + "%";
    document.title = "gpuex market · rental " + r.rental_id;
    document.getElementById("rental-id").textContent = r.rental_id;
    document.getElementById("status").replaceChildren(badge(r.status));
    document.getElementById("what").replaceChildren(
      r.gpu_count + " × " + r.gpu_model + " on offer #" + r.offer_id + " from provider ", providerLink(r.provider),
      " · rented by ", el("span", { class: "mono", title: r.renter }, gpuex.short(r.renter)));
    document.getElementById("cards").replaceChildren(
      card("Deposit", amount(r.deposit, pay),
           duration(r.booked_duration) + " at " + amount(r.price_per_hour, pay) + "/h"),
      card("Earned", amount(r.paid, pay), s ? "settled" : "by the applied reports"),
      card("Claimed", amount(r.claimed, pay),
           s ? "by the provider while it ran" : amount(r.claimable, pay) + " claimable now"),
      card("Refunded", amount(r.refunded, pay), s ? "to the renter" : "so far"),
      card("Delivered", duration(r.delivered_seconds),
           s ? duration(s.missed_seconds) + " missed"
             : started ? "of " + duration(Math.round(elapsed)) + " elapsed" : "not started"),
      card("Covered until", r.covered_until === null ? "—" : time(r.covered_until), "by the applied reports"),
      card("GPU utilisation", util, "over every delivered second"),
      card("Slashed", s ? amount(s.slashed, stake) : "—", s ? s.slash_reason.replace("_", " ") : "settles at the end",
           s !== null && Number(s.slashed) > 0),
      s ? card("Ended", time(s.settled_at), "settled " + s.status.replace("_", " "))
        : card("Ends", started ? time(r.ends_at) : "—",
               started ? duration(r.duration) + " rented" : "waiting for the start"));

    const timeline = [["Opened", time(r.opened_at)]];
    if (started) timeline.push(["Started", time(r.started_at) + (r.started_by_report ? " (by its first report)" : "")]);
    if (r.terminated_at !== null) timeline.push(["Terminated", time(r.terminated_at) + " by the renter"]);
    if (r.decline_reason !== null) timeline.push(["Declined", "by the provider: " + r.decline_detail]);
    if (s) {
      timeline.push(["Settled", time(s.settled_at) + ": " + s.status.replace("_", " ")]);
      timeline.push(["Settlement", amount(s.provider_payout, pay) + " to the provider in all, " + amount(s.fee, pay) +
                     " fee, " + amount(s.refund, pay) + " refunded"]);
      if (Number(s.slashed) > 0) {
        timeline.push(["Slash", amount(s.slashed, stake) + " of the provider's collateral to the renter (" +
                       s.slash_reason.replace("_", " ") + ")"]);
      }
    }
    for (const k of r.skipped) timeline.push(["Report #" + k.seq, "skipped: " + k.reason.replaceAll("_", " ")]);
    timeline.push(["Job spec hash", el("code", null, r.job_spec_hash)]);
    document.getElementById("timeline").replaceChildren(
      ...timeline.flatMap(([term, value]) => [el("dt", null, term), el("dd", null, value)]));

    const rows = r.reports.slice(-REPORT_ROWS).reverse().map((p) => [
      p.seq, time(p.covered_until), duration(p.delivered_seconds),
      p.util_pct === null ? "—" : p.util_pct.toFixed(1) + "%", amount(p.earned, pay)]);
    gpuex.fillTable(document.getElementById("reports"), rows, [0, 2, 3, 4], document.getElementById("reports-empty"));
    document.getElementById("reports-note").textContent =
      r.reports.length > REPORT_ROWS ? `(the latest ${REPORT_ROWS} of ${r.reports.length})` : "";
    usageChart.draw(canvas, r);
  }

  async function refresh() {
    const error = document.getElementById("error");
    try {
      const [info, rental] = await Promise.all([gpuex.market(), api("api/rentals/" + encodeURIComponent(rentalId))]);
      error.hidden = true;
      shown = rental;
      render(rental, info);
    } catch (e) {
      gpuex.showError(error, e);
    }
  }

  window.addEventListener("resize", () => { if (shown) usageChart.draw(canvas, shown); });
  gpuex.live(refresh);
})();

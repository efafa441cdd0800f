// The provider page: stake and counters from the registry; reputation, offers, rentals and history from its events.
// Figures show as the API's `display` writes them, as `gpuex provider show` does.
"use strict";

(() => {
  const { el, api, time, rentalLink, badge, card, fillTable } = gpuex;
  const address = new URLSearchParams(location.search).get("address") || "";

  function render(p) {
    document.title = "gpuex market · provider " + p.address;
    document.getElementById("address").textContent = p.address;
    // The agent URL is text, never a link: the chain does not vouch for what a provider publishes.
    document.getElementById("agent").replaceChildren(
      /^0x0+$/.test(p.agent) ? "No agent key set. " : "Agent key " + p.agent + ". ",
      p.agent_url ? el("span", null, "Agent API at ", el("span", { class: "mono", id: "agent-url" }, p.agent_url),
                       " (as the provider published it).")
                  : "No agent URL published.");
    const shown = p.display;
    const unbondingNote = Number(p.unbonding) > 0 ? "until " + time(p.unbonding_ends_at) : null;
    document.getElementById("cards").replaceChildren(
      card("Staked", shown.staked), card("Locked", shown.locked, "collateral of live rentals"),
      card("Unbonding", shown.unbonding, unbondingNote), card("Free", shown.free),
      card("Reliability", shown.reliability, "share of the value settled with other renters that was delivered"),
      card("Value settled", shown.value_settled,
           shown.value_missed + " missed, " + p.distinct_renters + " distinct renters"),
      card("Claimable", shown.claimable, "earnings of live rentals not claimed yet"),
      card("Rentals completed", p.rentals_completed),
      card("Delivered", shown.seconds_delivered, shown.seconds_missed + " missed"),
      card("Slashes", p.slashes, null, p.slashes > 0),
      card("Declines", p.declines, p.decline_rate === null ? "rentals declined before the start, refunded in full"
                                    : shown.decline_rate + " of the rentals that ended; refunded in full"));
    fillTable(document.getElementById("offers"), p.offers.map((o) => [
      "#" + o.offer_id, o.gpu_count, o.gpu_model, o.display.vram_gib, o.region,
      o.display.price_per_hour, o.display.durations,
      o.egress ? "allowed" : "no",
      o.rental_id ? rentalLink(o.rental_id, "rented") : badge(o.available ? "available" : o.status),
      window.gpuexLib ? window.gpuexLib.offerActions(o) : null,
    ]), [1, 3, 5], document.getElementById("offers-empty"));
    fillTable(document.getElementById("rentals"), p.rentals.map((r) => [
      rentalLink(r.rental_id), "#" + r.offer_id, el("span", { class: "mono", title: r.renter }, gpuex.short(r.renter)),
      badge(r.status), time(r.opened_at), r.display.delivered_seconds, r.display.paid,
    ]), [5, 6], document.getElementById("rentals-empty"));
    fillTable(document.getElementById("history"), p.history.map((h) => [
      time(h.timestamp), h.block, h.event,
      h.rental_id ? el("span", null, h.summary + " (", rentalLink(h.rental_id, "rental " + h.rental_id), ")")
                  : h.summary,
    ]), [1]);
  }

  async function refresh() {
    const error = document.getElementById("error");
    try {
      const provider = await api("api/providers/" + encodeURIComponent(address));
      error.hidden = true;
      render(provider);
    } catch (e) {
      gpuex.showError(error, e);
    }
  }

  // The offers' provider buttons show once the connected wallet is this provider's.
  window.addEventListener("gpuex:account", refresh);
  gpuex.live(refresh);
})();

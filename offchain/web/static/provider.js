// The provider page: stake and counters from the registry; reputation, offers, rentals and history from its events.
"use strict";

(() => {
  const { el, api, amount, duration, time, percent, rentalLink, badge, card, fillTable } = gpuex;
  const address = new URLSearchParams(location.search).get("address") || "";

  function render(p, info) {
    const pay = info.payment_token.symbol;
    const stake = info.stake_token.symbol;
    document.title = "gpuex market · provider " + p.address;
    document.getElementById("address").textContent = p.address;
    // The agent URL is text, never a link: the chain does not vouch for what a provider publishes.
    document.getElementById("agent").replaceChildren(
      /^0x0+$/.test(p.agent) ? "No agent key set. " : "Agent key " + p.agent + ". ",
      p.agent_url ? el("span", null, "Agent API at ", el("span", { class: "mono", id: "agent-url" }, p.agent_url),
                       " (as the provider published it).")
                  : "No agent URL published.");
    const unbondingNote = Number(p.unbonding) > 0 ? "until " + time(p.unbonding_ends_at) : null;
    document.getElementById("cards").replaceChildren(
      card("Staked", amount(p.staked, stake)), card("Locked", amount(p.locked, stake), "collateral of live rentals"),
      card("Unbonding", amount(p.unbonding, stake), unbondingNote), card("Free", amount(p.free, stake)),
      card("Reliability", p.reliability === null ? "new" : percent(p.reliability),
           "share of the value settled with other renters that was delivered"),
      card("Value settled", amount(p.value_settled, pay),
           amount(p.value_missed, pay) + " missed, " + p.distinct_renters + " distinct renters"),
      card("Claimable", amount(p.claimable, pay), "earnings of live rentals not claimed yet"),
      card("Rentals completed", p.rentals_completed),
      card("Delivered", duration(p.seconds_delivered), duration(p.seconds_missed) + " missed"),
      card("Slashes", p.slashes, null, p.slashes > 0),
      card("Declines", p.declines, "rentals declined before the start, refunded in full"));
    fillTable(document.getElementById("offers"), p.offers.map((o) => [
      "#" + o.offer_id, o.gpu_count, o.gpu_model, o.vram_gib.toFixed(1) + " GiB", o.region,
      amount(o.price_per_hour, pay), duration(o.min_duration) + " – " + duration(o.max_duration),
      o.egress ? "allowed" : "no",
      o.rental_id ? rentalLink(o.rental_id, "rented") : badge(o.available ? "available" : o.status),
      window.gpuexLib ? window.gpuexLib.offerActions(o) : null,
    ]), [1, 3, 5], document.getElementById("offers-empty"));
    fillTable(document.getElementById("rentals"), p.rentals.map((r) => [
      rentalLink(r.rental_id), "#" + r.offer_id, el("span", { class: "mono", title: r.renter }, gpuex.short(r.renter)),
      badge(r.status), time(r.opened_at), duration(r.delivered_seconds), amount(r.paid, pay),
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
      const [info, provider] = await Promise.all([gpuex.market(), api("api/providers/" + encodeURIComponent(address))]);
      error.hidden = true;
      render(provider, info);
    } catch (e) {
      gpuex.showError(error, e);
    }
  }

  // The offers' provider buttons show once the connected wallet is this provider's.
  window.addEventListener("gpuex:account", refresh);
  gpuex.live(refresh);
})();

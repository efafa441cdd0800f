// The offers page: the filter form mirrors the query string, which goes to api/offers as it is.
"use strict";

(() => {
  const { api, el, providerLink, rentalLink, badge, fillTable, time } = gpuex;
  const form = document.getElementById("filters");
  const error = document.getElementById("offers-error");

  /** The form's non-empty fields as query parameters (what the server parses into an OfferQuery). */
  function formQuery() {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (String(value).trim() !== "") params.set(name, String(value).trim());
    }
    if (params.get("sort") === "price") params.delete("sort");
    return params;
  }

  function fillForm(params) {
    for (const field of form.elements) {
      if (!field.name) continue;
      if (field.type === "checkbox") field.checked = params.has(field.name);
      else if (params.has(field.name)) field.value = params.get(field.name);
    }
  }

  async function loadOffers() {
    let page;
    try {
      page = await api("api/offers" + location.search);
    } catch (e) {
      gpuex.showError(error, e);
      return;
    }
    error.hidden = true;
    const rows = page.offers.map((o) => [
      "#" + o.offer_id, o.gpu_count, o.gpu_model, o.display.vram_gib, o.region,
      o.display.price_per_hour, o.display.price_per_gpu_hour, o.display.durations, o.egress ? "allowed" : "no",
      providerLink(o.provider), o.display.reliability, o.declines + " (" + o.display.decline_rate + ")",
      o.rental_id ? rentalLink(o.rental_id, "rented") : badge(o.available ? "available" : o.status),
      o.display.value_settled, o.distinct_renters, o.display.util_floor, o.display.agent,
      o.available ? el("button", { class: "rent", "data-offer": o.offer_id }, "Rent") : "",
    ]);
    fillTable(document.getElementById("offers"), rows, [1, 3, 5, 6, 10, 11, 13, 14, 15],
              document.getElementById("offers-empty"));
  }

  async function loadRentals() {
    const page = await api("api/rentals?limit=20");
    const rows = page.rentals.map((r) => [
      rentalLink(r.rental_id), "#" + r.offer_id, r.gpu_count + " × " + r.gpu_model, gpuex.short(r.renter),
      badge(r.status), r.display.price_per_hour, time(r.opened_at), r.display.delivered_seconds,
      r.display.utilisation, r.display.paid,
    ]);
    fillTable(document.getElementById("rentals"), rows, [5, 7, 8, 9], document.getElementById("rentals-empty"));
  }

  async function refresh() {
    const { symbol } = (await gpuex.market()).payment_token;
    for (const node of document.querySelectorAll(".symbol")) node.textContent = symbol;
    await Promise.all([loadOffers(), loadRentals()]);
  }

  fillForm(new URLSearchParams(location.search));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = formQuery().toString();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
    loadOffers();
  });
  form.addEventListener("reset", () => {
    history.replaceState(null, "", location.pathname);
    setTimeout(loadOffers);
  });
  gpuex.live(refresh);
})();

// The offers page: the filter form mirrors the query string, which goes to api/offers as it is.
"use strict";

(() => {
  const { el, api, amount, duration, percent, providerLink, rentalLink, badge, fillTable, time } = gpuex;
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
    const token = (await gpuex.market()).payment_token;
    let page;
    try {
      page = await api("api/offers" + location.search);
    } catch (e) {
      gpuex.showError(error, e);
      return;
    }
    error.hidden = true;
    const rows = page.offers.map((o) => [
      "#" + o.offer_id, o.gpu_count, o.gpu_model, o.vram_gib.toFixed(1) + " GiB", o.region,
      amount(o.price_per_hour, token.symbol), amount(o.price_per_gpu_hour, token.symbol),
      duration(o.min_duration) + " – " + duration(o.max_duration), o.egress ? "allowed" : "no",
      providerLink(o.provider), o.reliability === null ? "new" : percent(o.reliability), o.declines,
      o.rental_id ? rentalLink(o.rental_id, "rented") : badge(o.available ? "available" : o.status),
      amount(o.value_settled, token.symbol), o.distinct_renters,
      o.available ? el("button", { class: "rent", "data-offer": o.offer_id }, "Rent") : "",
    ]);
    fillTable(document.getElementById("offers"), rows, [1, 3, 5, 6, 10, 11, 13, 14],
              document.getElementById("offers-empty"));
  }

  async function loadRentals() {
    const token = (await gpuex.market()).payment_token;
    const page = await api("api/rentals?limit=20");
    const rows = page.rentals.map((r) => [
      rentalLink(r.rental_id), "#" + r.offer_id, r.gpu_count + " × " + r.gpu_model, gpuex.short(r.renter),
      badge(r.status), amount(r.price_per_hour, token.symbol), time(r.opened_at), duration(r.delivered_seconds),
      r.util_pct === null ? "—" : r.util_pct.toFixed(1) + "%", amount(r.paid, token.symbol),
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

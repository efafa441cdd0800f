// gpuex market: what every page shares. Text from the chain (GPU models, regions) is only ever set as text,
// never as HTML: `el` builds elements and sets strings with textContent.
"use strict";

const gpuex = (() => {
  class ApiError extends Error {
    constructor(status, error, detail) {
      super(detail);
      this.status = status;
      this.error = error;
    }
  }

  /** GET a JSON API path (relative to the page, e.g. "api/offers?sort=price"); throws ApiError on refusal. */
  async function api(path) {
    const response = await fetch(path, { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new ApiError(response.status, body.error || "http_" + response.status, body.detail || response.statusText);
    }
    return body;
  }

  /** An element with properties (`class`, `href`, data-*, ...) and children (nodes, strings, null skipped). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function cell(content, numeric) {
    return el("td", numeric ? { class: "num" } : null, content);
  }

  /** Replaces a table's body with `rows` (arrays of cells' contents); shows `emptyNote` when there are none. */
  function fillTable(table, rows, numericColumns, emptyNote) {
    const body = table.tBodies[0];
    const tr = (row) => el("tr", null, ...row.map((content, i) => cell(content, numericColumns.includes(i))));
    body.replaceChildren(...rows.map(tr));
    if (emptyNote) emptyNote.hidden = rows.length > 0;
  }

  /** A decimal string of token units in human form ("3.600000" -> "3.60"), with the symbol if given. */
  function amount(decimal, symbol) {
    const text = Number(decimal).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 6 });
    return symbol ? text + " " + symbol : text;
  }

  function duration(seconds) {
    const parts = [[Math.floor(seconds / 86400), "d"], [Math.floor(seconds % 86400 / 3600), "h"],
                   [Math.floor(seconds % 3600 / 60), "m"], [seconds % 60, "s"]];
    return parts.filter(([n]) => n).map(([n, unit]) => n + unit).join(" ") || "0s";
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  /** Unix seconds as local "YYYY-MM-DD HH:MM:SS". */
  function time(ts) {
    if (ts === null || ts === undefined) return "—";
    const d = new Date(ts * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
           `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function short(address) {
    return address.slice(0, 6) + "…" + address.slice(-4);
  }

  function providerLink(address) {
    return el("a", { href: "provider?address=" + encodeURIComponent(address), title: address, class: "mono" },
              short(address));
  }

  function rentalLink(rentalId, text) {
    return el("a", { href: "rental?id=" + encodeURIComponent(rentalId), class: "mono" }, text || rentalId);
  }

  function badge(status) {
    return el("span", { class: "badge " + status }, status.replace("_", " "));
  }

  function showError(node, error) {
    node.textContent = error instanceof ApiError ? error.message : "cannot reach the page's server: " + error;
    node.hidden = false;
  }

  let marketInfo = null;

  /** Chain, contracts and tokens (read once). */
  async function market() {
    if (marketInfo === null) marketInfo = await api("api/market");
    return marketInfo;
  }

  /**
   * Follows the index over server-sent events: `refresh()` runs now and after every move of the index. The
   * header's pill says whether the stream is live; the browser reconnects by itself after a drop. The stream is
   * closed when the page is hidden: a page kept in the back-forward cache would otherwise hold one of the six
   * connections a browser opens to a server, and the seventh page would wait for ever.
   */
  function live(refresh) {
    const pill = document.getElementById("live");
    const footerBlock = document.getElementById("block");
    let running = null;
    let again = false;
    let stream = null;
    async function run() {
      if (running) { again = true; return; }
      running = refresh().catch((error) => console.error(error));
      await running;
      running = null;
      if (again) { again = false; run(); }
    }
    function connect() {
      stream = new EventSource("api/events");
      stream.addEventListener("index", (event) => {
        const status = JSON.parse(event.data);
        pill.className = "live on";
        pill.textContent = (status.ready ? "live" : "indexing") + " · block " + (status.block ?? "…");
        if (footerBlock) footerBlock.textContent = status.block ?? "…";
        run();
      });
      stream.onerror = () => {
        pill.className = "live off";
        pill.textContent = "reconnecting…";
      };
    }
    window.addEventListener("pagehide", () => stream.close());
    window.addEventListener("pageshow", (event) => { if (event.persisted) connect(); });
    connect();
  }

  /** A figure card: a label, a value and an optional note; `alert` marks it as bad news. */
  function card(label, value, note, alert) {
    return el("div", { class: alert ? "card alert" : "card" },
              el("div", { class: "label" }, label), el("div", { class: "value" }, value),
              note ? el("div", { class: "note" }, note) : null);
  }

  return { ApiError, api, el, fillTable, amount, duration, time, short, providerLink, rentalLink,
           badge, card, showError, market, live };
})();

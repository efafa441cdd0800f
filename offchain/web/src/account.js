// "My account": the connected account's balances, read from the chain through the wallet (the escrow's
// withdrawable balance, the registry's compensation and stake, the token in the wallet) and the earnings of its
// live rentals as a provider, with its rentals as renter and as provider (`api/rentals?renter=` / `?provider=`);
// withdraw, withdraw compensation and terminate are sent through the wallet.
import { formatUnits } from "viem";
import { getJson } from "./api.js";
import { connectedAccount, read, send } from "./wallet.js";

/* global gpuex -- common.js, the page's shared helpers, loaded before the bundle */

const LIVE_FOR_RENTER = new Set(["open", "running"]);

let refresh = async () => {};

/** A button that sends a transaction (its outcome shows in the transaction list), then reads the balances again. */
function actionButton(id, text, onClick) {
  const node = Object.assign(document.createElement("button"), { id, className: "act", textContent: text });
  node.addEventListener("click", () => onClick().then(() => refresh(), () => {}));
  return node;
}

async function render(account) {
  const { el, card, amount, badge, duration, time, rentalLink, fillTable } = gpuex;
  const market = await getJson("api/market");
  const pay = market.payment_token;
  const stakeToken = market.stake_token;
  const [held, withdrawable, compensation, stake, asProvider, asRenter, rentedOut] = await Promise.all([
    read("payment_token", "balanceOf", [account]),
    read("escrow", "balanceOf", [account]),
    read("registry", "compensationOf", [account]),
    read("registry", "getProvider", [account]),
    getJson("api/providers/" + account, true),
    getJson("api/rentals?limit=500&renter=" + account),
    getJson("api/rentals?limit=500&provider=" + account),
  ]);
  const human = (units, token) => amount(formatUnits(units, token.decimals), token.symbol);
  document.getElementById("who").textContent = account;
  const withdraw = withdrawable > 0n
    ? actionButton("withdraw", "Withdraw", () => send("Withdraw " + human(withdrawable, pay), "escrow", "withdraw"))
    : null;
  const withdrawCompensation = compensation > 0n
    ? actionButton("withdraw-compensation", "Withdraw", () => send(
      "Withdraw compensation " + human(compensation, stakeToken), "registry", "withdrawCompensation"))
    : null;
  const free = stake.staked - stake.locked - stake.unbonding;
  document.getElementById("balances").replaceChildren(
    card("In the wallet", human(held, pay)),
    el("div", { class: "card", id: "escrow-balance" }, el("div", { class: "label" }, "Withdrawable"),
       el("div", { class: "value" }, human(withdrawable, pay)),
       el("div", { class: "note" }, "refunds and payouts the escrow holds for you "), withdraw),
    el("div", { class: "card", id: "compensation" }, el("div", { class: "label" }, "Compensation"),
       el("div", { class: "value" }, human(compensation, stakeToken)),
       el("div", { class: "note" }, "slashed stake owed to you "), withdrawCompensation),
    card("Stake", human(stake.staked, stakeToken), human(stake.locked, stakeToken) + " locked, " +
         human(free, stakeToken) + " free"),
    card("Pending earnings", asProvider ? amount(asProvider.claimable, pay.symbol) : "—",
         "earned by your live rentals as a provider, not claimed yet"),
  );
  const rows = [
    ...asRenter.rentals.map((r) => ({ ...r, role: "renter" })),
    ...rentedOut.rentals.filter((r) => r.renter !== r.provider).map((r) => ({ ...r, role: "provider" })),
  ].sort((a, b) => b.opened_at - a.opened_at);
  fillTable(document.getElementById("my-rentals"), rows.map((r) => [
    rentalLink(r.rental_id), r.role, "#" + r.offer_id, r.gpu_count + " × " + r.gpu_model, badge(r.status),
    amount(r.price_per_hour, pay.symbol), time(r.opened_at), duration(r.delivered_seconds), amount(r.paid, pay.symbol),
    r.role === "renter" && LIVE_FOR_RENTER.has(r.status)
      ? el("button", { class: "act terminate", "data-rental": r.rental_id }, "Terminate")
      : "",
  ]), [5, 7, 8], document.getElementById("my-rentals-empty"));
}

/** Fills the account page (the account page only) on every move of the index and every change of account. */
export function startAccount() {
  const page = document.getElementById("my-account");
  if (!page) return;
  const error = document.getElementById("error");
  refresh = async () => {
    const account = connectedAccount();
    page.hidden = account === null;
    document.getElementById("not-connected").hidden = account !== null;
    if (account === null) return;
    try {
      await render(account);
      error.hidden = true;
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  };
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.terminate[data-rental]");
    if (!button) return;
    const rental = button.dataset.rental;
    send("Terminate rental " + rental, "escrow", "terminate", [BigInt(rental)]).then(() => refresh(), () => {});
  });
  window.addEventListener("gpuex:account", refresh);
  gpuex.live(refresh);
}

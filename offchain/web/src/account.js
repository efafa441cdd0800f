// "My account": the connected account's balances, read from the chain through the wallet (the escrow's
// withdrawable balance, the registry's compensation and stake, the token in the wallet), and from the server's
// account summary (`api/accounts/<address>`) its rentals as renter and as provider and the unclaimed earnings of
// its running rentals; withdraw, withdraw compensation and terminate are sent through the wallet.
import { formatUnits } from "viem";
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
  const { el, card, amount, badge, time, rentalLink, fillTable } = gpuex;
  const market = await gpuex.market();
  const pay = market.payment_token;
  const stakeToken = market.stake_token;
  // What the wallet acts on is read from the chain through it; the rentals and the unclaimed earnings of live
  // rentals come from the server's index (`api/accounts`).
  const [held, withdrawable, compensation, stake, summary] = await Promise.all([
    read("payment_token", "balanceOf", [account]),
    read("escrow", "balanceOf", [account]),
    read("registry", "compensationOf", [account]),
    read("registry", "getProvider", [account]),
    gpuex.api("api/accounts/" + account),
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
    card("Pending earnings", summary.balances.display.pending_earnings,
         "what claiming your running rentals as a provider would credit now"),
  );
  fillTable(document.getElementById("my-rentals"), summary.rentals.map((r) => [
    rentalLink(r.rental_id), r.role, "#" + r.offer_id, r.display.gpus, badge(r.status), r.display.price_per_hour,
    time(r.opened_at), r.display.delivered_seconds, r.display.paid,
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

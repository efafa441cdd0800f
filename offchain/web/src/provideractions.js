// A provider's own offers on its page, when the connected account is that provider: pause, resume and reprice
// (`ProviderRegistry.pauseOffer`, `resumeOffer`, `updateOfferPrice`). The buttons are built for the page's plain
// script, which draws the offers table (`offerActions`); their clicks are handled here.
import { formatUnits, parseUnits } from "viem";
import { describeError, isConnected, send } from "./wallet.js";

/* global gpuex -- common.js, the page's shared helpers, loaded before the bundle */

const SECONDS_PER_HOUR = 3600n;

function button(text, action, offerId) {
  const node = Object.assign(document.createElement("button"), { className: "act", textContent: text });
  node.dataset.action = action;
  node.dataset.offer = String(offerId);
  return node;
}

/** The action buttons of an offer row (an `OfferView`), or null when the connected account is not its provider. */
export function offerActions(offer) {
  if (!isConnected(offer.provider) || offer.status === "closed") return null;
  const box = document.createElement("span");
  box.className = "actions";
  box.append(offer.status === "paused" ? button("Resume", "resume", offer.offer_id)
                                      : button("Pause", "pause", offer.offer_id));
  const reprice = button("Reprice", "reprice", offer.offer_id);
  reprice.dataset.price = String(offer.price_per_hour);
  box.append(reprice);
  return box;
}

function say(text, state) {
  const status = document.getElementById("reprice-status");
  status.textContent = text;
  status.dataset.state = state;
}

async function reprice(offerId) {
  const token = (await gpuex.market()).payment_token;
  const perHour = parseUnits(document.getElementById("reprice-price").value.trim() || "0", token.decimals);
  // Rounded to the nearest unit, as `gpuex offer update` rounds it.
  const perSecond = (perHour + SECONDS_PER_HOUR / 2n) / SECONDS_PER_HOUR;
  if (perSecond === 0n) throw new Error("the price must be above zero");
  const shown = formatUnits(perSecond * SECONDS_PER_HOUR, token.decimals);
  await send(`Reprice offer #${offerId} to ${shown} ${token.symbol}/h`, "registry", "updateOfferPrice",
             [BigInt(offerId), perSecond]);
  say(`offer #${offerId} now costs ${shown} ${token.symbol}/h`, "confirmed");
}

/** Wires the provider buttons and the reprice form (the provider page only). */
export function startProviderActions() {
  const panel = document.getElementById("reprice");
  if (!panel) return;
  document.addEventListener("click", (event) => {
    const target = event.target.closest("button.act[data-action]");
    if (!target) return;
    const offerId = Number(target.dataset.offer);
    const { action } = target.dataset;
    if (action === "reprice") {
      panel.dataset.offer = String(offerId);
      document.getElementById("reprice-offer").textContent = "#" + offerId;
      document.getElementById("reprice-price").value = target.dataset.price;
      say("", "");
      panel.hidden = false;
      return;
    }
    const call = action === "pause" ? "pauseOffer" : "resumeOffer";
    const label = (action === "pause" ? "Pause" : "Resume") + " offer #" + offerId;
    send(label, "registry", call, [BigInt(offerId)]).catch(() => {});
  });
  document.getElementById("reprice-form").addEventListener("submit", (event) => {
    event.preventDefault();
    reprice(Number(panel.dataset.offer)).catch((e) => say(describeError(e), "failed"));
  });
  document.getElementById("reprice-cancel").addEventListener("click", () => { panel.hidden = true; });
}

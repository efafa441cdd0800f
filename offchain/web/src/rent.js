// Renting an offer from the offers page, as `gpuex rent` does: the job spec and its hash, the escrow's allowance
// for the deposit when it is short, `openRental` with the price shown as the price guard, then the spec uploaded to
// the provider's agent through the renter API (signed by the wallet).
import { formatUnits, parseEventLogs, parseUnits } from "viem";
import { buildSpec, specHash, splitCommand } from "./jobspec.js";
import { checkedAgent, uploadSpec } from "./renterapi.js";
import { deployment, describeError, ensureReady, read, send, txEntry } from "./wallet.js";

/* global gpuex -- common.js, the page's shared helpers, loaded before the bundle */

const SECONDS_PER_HOUR = 3600n;

let chosen = null; // {offer, token}

function panel() {
  return document.getElementById("rent");
}

function say(text, state) {
  const status = document.getElementById("rent-status");
  status.textContent = text;
  status.className = "rent-status " + (state || "");
  status.dataset.state = state || "";
}

/** The offer's price per second in token units, from its price per hour as the page shows it. */
function pricePerSecond(offer, token) {
  const perHour = parseUnits(String(offer.price_per_hour), token.decimals);
  return perHour / SECONDS_PER_HOUR;
}

function showDeposit() {
  if (chosen === null) return;
  const hours = Number(document.getElementById("rent-hours").value);
  const seconds = BigInt(Math.round(hours * 3600) || 0);
  const deposit = pricePerSecond(chosen.offer, chosen.token) * seconds;
  document.getElementById("rent-deposit").textContent =
    formatUnits(deposit, chosen.token.decimals) + " " + chosen.token.symbol;
}

async function choose(offerId) {
  const [{ offers }, market] = await Promise.all([
    gpuex.api("api/offers?include_unavailable=true&sort=offer"), gpuex.market(),
  ]);
  const offer = offers.find((o) => o.offer_id === offerId);
  if (!offer) throw new Error("no offer #" + offerId);
  chosen = { offer, token: market.payment_token };
  document.getElementById("rent-offer").textContent =
    `#${offer.offer_id}: ${offer.gpu_count} × ${offer.gpu_model} in ${offer.region} at ` +
    `${offer.display.price_per_hour} (at most this price), for ${offer.display.durations}`;
  panel().dataset.offer = String(offer.offer_id);
  panel().hidden = false;
  say("", "");
  showDeposit();
  panel().scrollIntoView({ block: "nearest" });
}

async function rent() {
  const { offer, token } = chosen;
  const hours = Number(document.getElementById("rent-hours").value);
  const seconds = Math.round(hours * 3600);
  if (!(seconds >= offer.min_duration && seconds <= offer.max_duration)) {
    const { duration } = gpuex;
    throw new Error(`the offer rents for ${duration(offer.min_duration)} to ${duration(offer.max_duration)}, ` +
                    `not ${duration(seconds)}`);
  }
  const spec = buildSpec({
    command: splitCommand(document.getElementById("rent-command").value),
    image: document.getElementById("rent-image").value.trim(),
  });
  const hash = specHash(spec);
  // The wallet's account on the deployment's chain before anything is read or sent.
  const { from, deployed } = await ensureReady();
  const price = pricePerSecond(offer, token);
  const deposit = price * BigInt(seconds);

  // The spec travels to the provider's agent after the rental opens: check before paying that it can.
  const provider = await gpuex.api("api/providers/" + offer.provider);
  if (!provider.agent_url) throw new Error("the provider publishes no agent URL: the job spec could not be uploaded");
  say("checking the provider's agent…", "pending");
  await checkedAgent(provider.agent_url, provider.agent);

  const balance = await read("payment_token", "balanceOf", [from]);
  if (balance < deposit) {
    throw new Error(`the deposit is ${formatUnits(deposit, token.decimals)} ${token.symbol}; ` +
                    `the wallet holds ${formatUnits(balance, token.decimals)}`);
  }
  const allowance = await read("payment_token", "allowance", [from, deployed.escrow.address]);
  if (allowance < deposit) {
    say("approving the deposit…", "pending");
    await send(`Approve ${formatUnits(deposit, token.decimals)} ${token.symbol}`, "payment_token", "approve",
               [deployed.escrow.address, deposit]);
  }
  say("opening the rental…", "pending");
  const receipt = await send(`Rent offer #${offer.offer_id}`, "escrow", "openRental",
                             [BigInt(offer.offer_id), BigInt(seconds), price, hash]);
  const [opened] = parseEventLogs({ abi: deployed.escrow.abi, eventName: "RentalOpened", logs: receipt.logs });
  const rentalId = opened.args.rentalId.toString();
  say("uploading the job spec to the provider's agent…", "pending");
  const upload = txEntry(`Job spec of rental ${rentalId}`);
  try {
    await uploadSpec(provider.agent_url, rentalId, spec);
  } catch (error) {
    upload.set("failed", "not uploaded: " + describeError(error));
    throw new Error(`rental ${rentalId} is open but its spec did not reach the agent: ${describeError(error)}`);
  }
  upload.set("confirmed", "uploaded to the provider's agent");
  const link = Object.assign(document.createElement("a"), {
    id: "rented", href: "rental?id=" + rentalId, textContent: "rental " + rentalId,
  });
  const status = document.getElementById("rent-status");
  status.replaceChildren("Rented: ", link, ". The job starts once the provider's agent has it.");
  status.className = "rent-status confirmed";
  status.dataset.state = "confirmed";
}

/** Wires the Rent buttons of the offers table and the rent form (the offers page only). */
export function startRent() {
  if (!panel()) return;
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.rent[data-offer]");
    if (button) choose(Number(button.dataset.offer)).catch((e) => say(describeError(e), "failed"));
  });
  document.getElementById("rent-hours").addEventListener("input", showDeposit);
  document.getElementById("rent-cancel").addEventListener("click", () => { panel().hidden = true; });
  document.getElementById("rent-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const submit = event.submitter;
    if (submit) submit.disabled = true;
    rent()
      .catch((e) => say(describeError(e), "failed"))
      .finally(() => { if (submit) submit.disabled = false; });
  });
}

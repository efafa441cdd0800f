// The page's entry point: the wallet and chain side (viem over the injected EIP-1193 provider) and charts (uPlot).
// It runs after common.js and before each page's own script, which find what they call of it as `window.gpuexLib`
// (and the rental page's charts and renter API as `window.gpuexRental`).
import { startAccount } from "./account.js";
import { offerActions, startProviderActions } from "./provideractions.js";
import { startRent } from "./rent.js";
import { connectedAccount, startWallet } from "./wallet.js";
import "./rental.js";

window.gpuexLib = { connectedAccount, offerActions };

document.addEventListener("DOMContentLoaded", () => {
  startWallet().catch((error) => console.error(error));
  startRent();
  startProviderActions();
  startAccount();
});

// The page's entry point: the wallet and chain side (viem over the injected EIP-1193 provider) and charts (uPlot).
// It runs after common.js and before each page's own script, which find it as `window.gpuexLib`.
import uPlot from "uplot";
import { startAccount } from "./account.js";
import { offerActions, startProviderActions } from "./provideractions.js";
import { startRent } from "./rent.js";
import { signedHeaders } from "./renterapi.js";
import { connect, connectedAccount, send, startWallet } from "./wallet.js";
import "./rental.js";

window.gpuexLib = { uPlot, connect, connectedAccount, send, signedHeaders, offerActions };

document.addEventListener("DOMContentLoaded", () => {
  startWallet().catch((error) => console.error(error));
  startRent();
  startProviderActions();
  startAccount();
});

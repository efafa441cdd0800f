// The page's entry point: the wallet and chain side (viem over the injected EIP-1193 provider) and charts (uPlot).
import { connectWallet } from "./wallet.js";
import uPlot from "uplot";

window.gpuexLib = { connectWallet, uPlot };
import "./rental.js";

// The connected browser wallet (EIP-1193, `window.ethereum`) through viem, and the header's wallet bar. The page
// holds no key: it reads the chain and asks the wallet to send transactions and sign typed data, which the wallet
// shows its owner first. The deployment's addresses and ABIs come from the server (`api/contracts`, Brownie's
// build artifacts), never from a copy in this code.
import { BaseError, ContractFunctionRevertedError, createClient, custom, getAddress, numberToHex } from "viem";
import {
  getAddresses,
  getChainId,
  readContract,
  requestAddresses,
  simulateContract,
  waitForTransactionReceipt,
  writeContract,
} from "viem/actions";

const POLL_MILLISECONDS = 500;
const USER_REJECTED = 4001;

let client = null;
let account = null;
let contracts = null;

/** The deployment's contracts: {chain_id, registry, escrow, payment_token, stake_token: {address, abi}}. */
export async function deployment() {
  if (contracts === null) {
    const response = await fetch("api/contracts", { cache: "no-store" });
    if (!response.ok) throw new Error("the page's server cannot say which contracts to call (" + response.status + ")");
    contracts = await response.json();
  }
  return contracts;
}

/** The connected account (checksummed), or null. */
export function connectedAccount() {
  return account;
}

/** Whether `address` is the connected account. */
export function isConnected(address) {
  return account !== null && address !== null && address !== undefined && account.toLowerCase() === address.toLowerCase();
}

function walletClient() {
  if (!window.ethereum) return null;
  if (client === null) client = createClient({ transport: custom(window.ethereum), pollingInterval: POLL_MILLISECONDS });
  return client;
}

function setAccount(next) {
  const changed = next !== account;
  account = next;
  if (changed) window.dispatchEvent(new CustomEvent("gpuex:account", { detail: account }));
  renderBar();
}

/** Asks the wallet for an account (the wallet may ask its owner). Throws when there is no wallet. */
export async function connect() {
  const wallet = walletClient();
  if (wallet === null) throw new Error(NO_WALLET);
  const [first] = await requestAddresses(wallet);
  setAccount(first ? getAddress(first) : null);
  await checkChain();
  return account;
}

const NO_WALLET = "No browser wallet found: install MetaMask or a compatible wallet to rent or act as a provider.";
let chainState = { current: null, wanted: null };

/** Reads the wallet's chain and compares it with the deployment's; returns whether they agree. */
export async function checkChain() {
  const wallet = walletClient();
  if (wallet === null) return false;
  const [current, { chain_id: wanted }] = await Promise.all([getChainId(wallet), deployment()]);
  chainState = { current, wanted };
  renderBar();
  return current === wanted;
}

async function switchChain() {
  const { chain_id: wanted } = await deployment();
  await window.ethereum.request({ method: "wallet_switchEthereumChain", params: [{ chainId: numberToHex(wanted) }] });
  await checkChain();
}

/** The wallet client and the connected account on the deployment's chain, or a thrown reason for people. */
export async function ensureReady() {
  if (account === null) await connect();
  if (!(await checkChain())) {
    throw new Error(`the wallet is on chain ${chainState.current}; switch it to chain ${chainState.wanted}`);
  }
  return { wallet: walletClient(), from: account, deployed: await deployment() };
}

/** A view call on one of the deployment's contracts ("escrow", "registry", "payment_token", "stake_token"). */
export async function read(role, functionName, args = []) {
  const { wallet } = await ensureReady();
  const { address, abi } = (await deployment())[role];
  return readContract(wallet, { address, abi, functionName, args });
}

/**
 * Sends one transaction through the wallet, shown in the page's transaction list as `label`: dry-run first (a
 * revert is named without asking the wallet), then sent, then waited for. Returns the receipt; throws an Error
 * whose message names the revert (the contract's custom error with its arguments) or the wallet's refusal.
 */
export async function send(label, role, functionName, args = []) {
  const entry = txEntry(label);
  try {
    const { wallet, from, deployed } = await ensureReady();
    const { address, abi } = deployed[role];
    entry.set("pending", "waiting for the wallet…");
    const { request } = await simulateContract(wallet, { account: from, address, abi, functionName, args, chain: null });
    const hash = await writeContract(wallet, request);
    entry.set("pending", "sent " + hash.slice(0, 10) + "…, waiting for its block");
    const receipt = await waitForTransactionReceipt(wallet, { hash, pollingInterval: POLL_MILLISECONDS });
    if (receipt.status !== "success") throw new Error("the transaction reverted in block " + receipt.blockNumber);
    entry.set("confirmed", "confirmed in block " + receipt.blockNumber);
    return receipt;
  } catch (error) {
    const reason = describeError(error);
    entry.set("failed", "failed: " + reason);
    throw new Error(reason);
  }
}

/** A reason for people: a contract's custom error as `Name(arg=value, ...)`, a wallet's refusal in words. */
export function describeError(error) {
  if (error instanceof BaseError) {
    const reverted = error.walk((e) => e instanceof ContractFunctionRevertedError);
    if (reverted instanceof ContractFunctionRevertedError && reverted.data) {
      const { errorName, args, abiItem } = reverted.data;
      const names = (abiItem?.inputs || []).map((input) => input.name);
      const shown = (args || []).map((value, i) => (names[i] ? names[i] + "=" : "") + String(value));
      return `${errorName}(${shown.join(", ")})`;
    }
    if (reverted instanceof ContractFunctionRevertedError && reverted.reason) return "reverted: " + reverted.reason;
    if (error.walk((e) => e.code === USER_REJECTED)) return "rejected in the wallet";
    return error.shortMessage || error.message;
  }
  if (error && error.code === USER_REJECTED) return "rejected in the wallet";
  return error instanceof Error ? error.message : String(error);
}

/** An entry of the page's transaction list; `set(state, text)` moves it (pending, confirmed, failed). */
export function txEntry(label) {
  const list = document.getElementById("tx-list");
  const node = document.createElement("li");
  const text = document.createElement("span");
  node.append(Object.assign(document.createElement("strong"), { textContent: label + ": " }), text);
  list.prepend(node);
  list.hidden = false;
  function set(state, message) {
    node.className = "tx " + state;
    node.dataset.state = state;
    text.textContent = message;
  }
  set("pending", "preparing…");
  return { set };
}

function renderBar() {
  const bar = document.getElementById("wallet");
  if (!bar) return;
  if (!window.ethereum) {
    bar.replaceChildren(Object.assign(document.createElement("span"), { className: "no-wallet", textContent: NO_WALLET }));
    return;
  }
  if (account === null) {
    const button = Object.assign(document.createElement("button"), { id: "connect", textContent: "Connect wallet" });
    button.addEventListener("click", () => connect().catch((e) => txEntry("Connect").set("failed", describeError(e))));
    bar.replaceChildren(button);
    return;
  }
  const who = Object.assign(document.createElement("a"), {
    id: "account", className: "mono", href: "account", title: account,
    textContent: account.slice(0, 6) + "…" + account.slice(-4),
  });
  const parts = [who];
  if (chainState.current !== null && chainState.current !== chainState.wanted) {
    const wrong = Object.assign(document.createElement("span"), {
      id: "wrong-chain", className: "wrong-chain",
      textContent: `wrong network: the wallet is on chain ${chainState.current}, the market on ${chainState.wanted}`,
    });
    const button = Object.assign(document.createElement("button"), { id: "switch-chain", textContent: "Switch" });
    button.addEventListener("click", () => switchChain().catch((e) => txEntry("Switch").set("failed", describeError(e))));
    parts.push(wrong, button);
  }
  bar.replaceChildren(...parts);
}

/** Fills the wallet bar; an account the wallet already lets this page see (`eth_accounts`) counts as connected. */
export async function startWallet() {
  renderBar();
  const wallet = walletClient();
  if (wallet === null) return;
  window.ethereum.on?.("accountsChanged", (accounts) => setAccount(accounts[0] ? getAddress(accounts[0]) : null));
  window.ethereum.on?.("chainChanged", () => checkChain());
  const [known] = await getAddresses(wallet);
  if (known) {
    setAccount(getAddress(known));
    await checkChain();
  }
}

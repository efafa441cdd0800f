// The renter's side of the provider agent's renter API (`offchain.protocol.renterapi`), signed by the wallet: every
// rental request carries an EIP-712 `RenterRequest` (rental id, action, expiry, nonce, keccak256 of the body) in
// the Gpuex-* headers, in a domain bound to the chain and the escrow. The agent is another origin; it answers CORS.
import { bytesToHex, keccak256, stringToBytes, zeroHash } from "viem";
import { signTypedData } from "viem/actions";
import { ensureReady } from "./wallet.js";

const VALIDITY_SECONDS = 60;
const UPLOAD_WAIT_MILLISECONDS = 30_000;
const UPLOAD_RETRY_MILLISECONDS = 1_000;

/** The headers that authenticate one request of the connected renter (the wallet signs `eth_signTypedData_v4`). */
export async function signedHeaders(rentalId, action, body = "") {
  const { wallet, from, deployed } = await ensureReady();
  const expiry = BigInt(Math.floor(Date.now() / 1000) + VALIDITY_SECONDS);
  const nonce = bytesToHex(crypto.getRandomValues(new Uint8Array(32)));
  const signature = await signTypedData(wallet, {
    account: from,
    domain: {
      name: "gpuex Renter API", version: "1", chainId: deployed.chain_id, verifyingContract: deployed.escrow.address,
    },
    types: {
      RenterRequest: [
        { name: "rentalId", type: "uint256" },
        { name: "action", type: "string" },
        { name: "expiry", type: "uint64" },
        { name: "nonce", type: "bytes32" },
        { name: "bodyHash", type: "bytes32" },
      ],
    },
    primaryType: "RenterRequest",
    message: {
      rentalId: BigInt(rentalId), action, expiry, nonce, bodyHash: body ? keccak256(stringToBytes(body)) : zeroHash,
    },
  });
  return { "Gpuex-Expiry": String(expiry), "Gpuex-Nonce": nonce, "Gpuex-Signature": signature };
}

/** The agent at `agentUrl`, checked to hold the provider's registered agent key and to serve this deployment. */
export async function checkedAgent(agentUrl, agentKey) {
  const { deployed } = await ensureReady();
  const response = await fetch(agentUrl.replace(/\/+$/, "") + "/v1/agent");
  if (!response.ok) throw new Error(`the provider's agent at ${agentUrl} answers ${response.status}`);
  const info = await response.json();
  if (info.address.toLowerCase() !== agentKey.toLowerCase()) {
    throw new Error(`${agentUrl} answers as ${info.address}, not the provider's agent key ${agentKey}`);
  }
  if (info.chain_id !== deployed.chain_id || info.escrow.toLowerCase() !== deployed.escrow.address.toLowerCase()) {
    throw new Error(`${agentUrl} serves another chain or deployment`);
  }
  return info;
}

/**
 * Uploads a rental's spec (`PUT /v1/rentals/{id}/spec`, a `SpecUpload` without secrets) to the provider's agent,
 * retrying for a while while the agent has not seen the rental's block yet (404). One signature serves every try:
 * the agent spends a nonce only on a request it accepts for a rental it knows.
 */
export async function uploadSpec(agentUrl, rentalId, spec) {
  const url = `${agentUrl.replace(/\/+$/, "")}/v1/rentals/${rentalId}/spec`;
  const body = JSON.stringify({ spec, secrets: {} });
  const headers = { ...(await signedHeaders(rentalId, "spec", body)), "Content-Type": "application/json" };
  const deadline = Date.now() + UPLOAD_WAIT_MILLISECONDS;
  for (;;) {
    const response = await fetch(url, { method: "PUT", headers, body });
    if (response.ok) return;
    const refusal = await response.json().catch(() => ({ error: "http_" + response.status, detail: "" }));
    if (response.status !== 404 || Date.now() > deadline) throw new Error(`${refusal.error}: ${refusal.detail}`);
    await new Promise((resolve) => setTimeout(resolve, UPLOAD_RETRY_MILLISECONDS));
  }
}

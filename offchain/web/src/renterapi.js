// The renter's side of the provider agent's renter API (`offchain.protocol.renterapi`), signed by the wallet: every
// rental request carries an EIP-712 `RenterRequest` (rental id, action, expiry, nonce, keccak256 of the body) in
// the Gpuex-* headers, in a domain bound to the chain and the escrow. The agent is another origin; it answers CORS.
// The page's own server never sees a signature, a spec or the job's output: the browser talks to the agent.
import { bytesToHex, keccak256, stringToBytes, zeroHash } from "viem";
import { signTypedData } from "viem/actions";
import { ensureReady } from "./wallet.js";

const VALIDITY_SECONDS = 60;
const UPLOAD_WAIT_MILLISECONDS = 30_000;
const UPLOAD_RETRY_MILLISECONDS = 1_000;
const TYPES = {
  RenterRequest: [
    { name: "rentalId", type: "uint256" },
    { name: "action", type: "string" },
    { name: "expiry", type: "uint64" },
    { name: "nonce", type: "bytes32" },
    { name: "bodyHash", type: "bytes32" },
  ],
};

/**
 * The typed data one request signs (viem's `signTypedData` parameters): `rentalId` a decimal string or bigint,
 * `body` the request's body as text ("" for none).
 */
export function renterRequest({ chainId, escrow, rentalId, action, expiry, nonce, body = "" }) {
  return {
    domain: { name: "gpuex Renter API", version: "1", chainId: Number(chainId), verifyingContract: escrow },
    types: TYPES,
    primaryType: "RenterRequest",
    message: {
      rentalId: BigInt(rentalId), action, expiry: BigInt(expiry), nonce,
      bodyHash: body ? keccak256(stringToBytes(body)) : zeroHash,
    },
  };
}

/** The headers that authenticate one request of the connected renter (the wallet signs `eth_signTypedData_v4`). */
export async function signedHeaders(rentalId, action, body = "") {
  const { wallet, from, deployed } = await ensureReady();
  const expiry = Math.floor(Date.now() / 1000) + VALIDITY_SECONDS;
  const nonce = bytesToHex(crypto.getRandomValues(new Uint8Array(32)));
  const request = { chainId: deployed.chain_id, escrow: deployed.escrow.address, rentalId, action, expiry, nonce, body };
  const signature = await signTypedData(wallet, { account: from, ...renterRequest(request) });
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

/** A refusal of the agent (its `ApiError` body) or a failure to reach it, in words. */
export class AgentError extends Error {
  constructor(status, error, detail) {
    super(detail);
    this.status = status;
    this.error = error;
  }
}

/**
 * The renter's reads of one rental from its provider's agent (checked first with `checkedAgent`): `status()` and
 * `followLogs()`, each request signed by the connected wallet (a signature the wallet may ask its owner for).
 */
export class RenterSession {
  constructor(agentUrl, rentalId) {
    this.base = agentUrl.replace(/\/+$/, "") + "/v1/rentals/" + encodeURIComponent(rentalId);
    this.rentalId = rentalId;
  }

  async _fetch(path, action, init) {
    const headers = await signedHeaders(this.rentalId, action);
    let response;
    try {
      response = await fetch(this.base + path, { ...init, headers, cache: "no-store" });
    } catch (error) {
      throw new AgentError(0, "unreachable", "cannot reach the provider's agent at " + this.base + ": " + error);
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new AgentError(response.status, body.error || "http_" + response.status,
                           body.detail || response.statusText);
    }
    return response;
  }

  /** The job's status (`JobStatus`: phase, exit code, failure reason, result digest, ...). */
  async status() {
    return (await this._fetch("/status", "status")).json();
  }

  /**
   * Reads the job's log from byte `offset`, following while the job runs: `onEntry` gets each `LogEntry` and the
   * final `LogEnd` (`end: true`) as they arrive. Resolves with the offset reached (after a `LogEnd`, the log is
   * whole); rejects with an AgentError when refused. `signal` aborts the stream.
   */
  async followLogs(offset, onEntry, signal) {
    const response = await this._fetch(`/logs?offset=${offset}&follow=1`, "logs", { signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    let reached = offset;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (!line.trim()) continue;
        const entry = JSON.parse(line);
        reached = entry.offset;
        onEntry(entry);
      }
    }
    return reached;
  }
}

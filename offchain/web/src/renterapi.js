// The renter API of a provider's agent, called from the page with the renter's browser wallet: every request is
// signed as an EIP-712 `RenterRequest` (offchain/protocol/renterapi.py holds the domain, the type and the
// headers), so the agent answers only the rental's renter. The wallet signs; the page's own server never sees a
// signature or the job's output.
import { createWalletClient, custom, keccak256, toHex } from "viem";

export const DOMAIN_NAME = "gpuex Renter API";
export const DOMAIN_VERSION = "1";
export const VALIDITY_SECONDS = 60;
const ZERO_HASH = "0x" + "00".repeat(32);
const TYPES = {
  RenterRequest: [
    { name: "rentalId", type: "uint256" },
    { name: "action", type: "string" },
    { name: "expiry", type: "uint64" },
    { name: "nonce", type: "bytes32" },
    { name: "bodyHash", type: "bytes32" },
  ],
};

/** The typed data a request signs (viem's `signTypedData` parameters). `rentalId` is a decimal string or bigint. */
export function renterRequest({ chainId, escrow, rentalId, action, expiry, nonce, body }) {
  return {
    domain: { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId: Number(chainId), verifyingContract: escrow },
    types: TYPES,
    primaryType: "RenterRequest",
    message: {
      rentalId: BigInt(rentalId),
      action,
      expiry: BigInt(expiry),
      nonce,
      bodyHash: body && body.length ? keccak256(body) : ZERO_HASH,
    },
  };
}

/**
 * The headers of one signed request. `sign(typedData)` returns the signature (a wallet client's or a local
 * account's `signTypedData`); `now` is unix seconds; the nonce is 32 random bytes, accepted once by the agent.
 */
export async function signedHeaders(sign, { chainId, escrow, rentalId, action, body, now, validitySeconds }) {
  const expiry = Math.floor(now ?? Date.now() / 1000) + (validitySeconds ?? VALIDITY_SECONDS);
  const nonce = toHex(crypto.getRandomValues(new Uint8Array(32)));
  const signature = await sign(renterRequest({ chainId, escrow, rentalId, action, expiry, nonce, body }));
  return { "Gpuex-Expiry": String(expiry), "Gpuex-Nonce": nonce, "Gpuex-Signature": signature };
}

/** A refusal of the agent (its `ApiError` body) or a failure to reach it, in words. */
export class AgentError extends Error {
  constructor(status, error, detail) {
    super(detail);
    this.status = status;
    this.error = error;
  }
}

/** The injected wallet's accounts without asking (empty when the page is not connected, or there is no wallet). */
export async function walletAccounts() {
  if (!window.ethereum) return [];
  return window.ethereum.request({ method: "eth_accounts" });
}

/**
 * The renter's side of one rental's agent: `status()` and `followLogs()`, each request signed by `account` through
 * the injected wallet (each one a signature the wallet may ask its owner to approve).
 */
export class RenterSession {
  constructor({ agentUrl, chainId, escrow, rentalId, account }) {
    this.base = agentUrl.replace(/\/+$/, "") + "/v1/rentals/" + encodeURIComponent(rentalId);
    this.request = { chainId, escrow, rentalId };
    this.wallet = createWalletClient({ account, transport: custom(window.ethereum) });
  }

  async _fetch(path, action, init) {
    const headers = await signedHeaders((typed) => this.wallet.signTypedData(typed), { ...this.request, action });
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

// The connected browser wallet: viem clients over the injected EIP-1193 provider (`window.ethereum`).
import { createPublicClient, createWalletClient, custom } from "viem";

/** Asks the injected wallet for an account; returns viem clients bound to it. Throws when there is no wallet. */
export async function connectWallet() {
  if (!window.ethereum) throw new Error("no browser wallet found: install MetaMask or a compatible wallet");
  const transport = custom(window.ethereum);
  const wallet = createWalletClient({ transport });
  const [account] = await wallet.requestAddresses();
  return { account, wallet: createWalletClient({ account, transport }), public: createPublicClient({ transport }) };
}

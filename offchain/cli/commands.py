"""The top-level commands of `gpuex`, each with its help line and the module under `offchain.cli` that registers it.

`gpuex --help` is written from this table alone, and `gpuex COMMAND ...` imports only the module of COMMAND: the
command modules pull in web3, aiohttp, pydantic and the library, which take most of a second to import, so a command
pays for what it uses. Keep this module free of imports beyond the standard library.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str  # under offchain.cli; it registers the command in `register(commands)`
    help: str


#: In the order of `gpuex --help`; a module's commands together, in the order its `register` adds them.
COMMANDS: dict[str, Command] = {
    "devnet": Command("devnet", "a local chain with the suite deployed and an oracle running"),
    "config": Command("configure", "the config file's profiles: network, RPC, key file, devnet directory"),
    "provider": Command("provider", "a provider's stake, agent key, agent URL and GPUs"),
    "offer": Command("listing", "a provider's offers"),
    "offers": Command("offers", "the market as a renter sees it"),
    "rent": Command("rental", "rent an offer: pay its deposit into escrow with a job to run"),
    "rental": Command(
        "rental", "a rental's state, live utilisation, early end, and its job: spec, logs, results, shell"
    ),
    "withdraw": Command("rental", "withdraw what the escrow credited you (earnings, refunds) and slash compensation"),
    "faucet": Command("rental", "claim test payment tokens (deployments with the test token only)"),
    "rentals": Command("account", "your rentals, as renter and as provider, the most recently opened first"),
    "balance": Command(
        "account",
        "what you can withdraw (escrow balance, slash compensation), your stake, and the earnings a claim of your "
        "running rentals would credit you",
    ),
    "agent": Command("agent", "the provider agent: runs rentals' jobs and reports their telemetry"),
    "oracle": Command("oracle", "oracle services"),
    "web": Command("web", "serve the marketplace web page (offers, rentals, providers)"),
}

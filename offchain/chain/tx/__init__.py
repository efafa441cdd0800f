"""Sending transactions: `manager.TxManager` for services (persisted, bumped, confirmed; in the spirit of
Chainlink's txmgr) and `oneshot.Wallet` for the CLI and deploy (one call at a time, waited for).

Both dry-run a transaction before signing it (`dryrun`) and name reverts after the contracts' custom errors
(`reverts.RevertDecoder`). The other modules hold one concern each: EIP-1559 fees (`fees`), retry delays
(`backoff`), signing (`signers`), how nodes word their refusals (`senderrors`) and the SQLite store of the
manager (`store`).
"""

"""One way to reach a chain, read it, follow it and write to it; every other layer goes through here.

- `rpc`: `connect` and `ChainUnreachable`, the one error for a node that does not answer.
- `contracts`: contract handles whose ABIs come from Brownie's build artifacts.
- `reads`: every contract view as a typed record built by the ABI's names (the only caller of a view).
- `events`: every registry and escrow event as a typed record decoded from a raw log.
- `follower`: `EventFollower`, the one follower of a chain's logs (ranges, confirmations, reorgs, cursor).
- `tx`: sending transactions, persisted for services (`tx.manager`) or one at a time (`tx.oneshot`).
"""

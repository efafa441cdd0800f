"""The Merkle tree over a report period's samples, whose root goes on chain as `telemetryRoot`.

- Leaf: `keccak256(sample.canonical_bytes())`.
- Leaves are sorted by value before the tree is built, so the root depends on the set of samples only,
  not on the order they arrived in.
- Node: `keccak256(min(a, b) ++ max(a, b))` — sorted-pair hashing, as OpenZeppelin's `MerkleProof` does,
  so a proof is a plain list of siblings and `MerkleProof.verify` accepts it on chain.
- A level with an odd number of nodes carries its last node up unhashed (never paired with itself, which
  would let two different leaf lists share a root).
- No leaves: the zero hash. One leaf: the root is that leaf.

A leaf preimage is a JSON object of a few hundred bytes, never the 64 bytes of an inner node, so an inner
node cannot pass for a sample.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from eth_utils import keccak

from offchain.telemetry.models import GpuSample

ZERO_HASH = b"\x00" * 32


def leaf_hash(sample: GpuSample) -> bytes:
    return keccak(sample.canonical_bytes())


def sorted_leaves(samples: Iterable[GpuSample]) -> list[bytes]:
    """The leaves of a tree over `samples`, in tree order."""
    return sorted(leaf_hash(sample) for sample in samples)


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    paired = [_hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    return paired + [level[-1]] if len(level) % 2 else paired


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over leaves already in tree order (see `sorted_leaves`)."""
    if not leaves:
        return ZERO_HASH
    level = list(leaves)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The siblings from leaf `index` up to the root; levels where the node is carried up add none."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of {len(leaves)}")
    proof: list[bytes] = []
    level = list(leaves)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return proof


def verify_proof(leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether `proof` leads from `leaf` to `root`."""
    node = leaf
    for sibling in proof:
        node = _hash_pair(node, sibling)
    return node == root

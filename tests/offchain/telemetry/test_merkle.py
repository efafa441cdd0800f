"""Merkle root, proofs and their verification over sample leaves."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from offchain.telemetry.merkle import (
    ZERO_HASH,
    leaf_hash,
    merkle_proof,
    merkle_root,
    sorted_leaves,
    verify_proof,
)
from offchain.telemetry.models import GpuSample


def _leaves(count: int) -> list[bytes]:
    return sorted(keccak(text=f"leaf {i}") for i in range(count))


def _pair(a: bytes, b: bytes) -> bytes:
    return keccak(min(a, b) + max(a, b))


def test_no_leaves_give_the_zero_root():
    assert merkle_root([]) == ZERO_HASH


def test_one_leaf_is_its_own_root():
    [leaf] = _leaves(1)

    assert merkle_root([leaf]) == leaf
    assert merkle_proof([leaf], 0) == []
    assert verify_proof(leaf, [], leaf)


def test_root_hashes_sorted_pairs_and_carries_an_odd_node_up():
    a, b, c, d, e = _leaves(5)

    assert merkle_root([a, b]) == _pair(a, b) == _pair(b, a)
    assert merkle_root([a, b, c]) == _pair(_pair(a, b), c)
    assert merkle_root([a, b, c, d, e]) == _pair(_pair(_pair(a, b), _pair(c, d)), e)


def test_a_repeated_last_leaf_changes_the_root():
    a, b, c = _leaves(3)

    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])


@pytest.mark.parametrize("count", range(1, 18))
def test_every_leaf_proves_into_the_root(count):
    leaves = _leaves(count)
    root = merkle_root(leaves)

    for index, leaf in enumerate(leaves):
        assert verify_proof(leaf, merkle_proof(leaves, index), root)


def test_a_proof_does_not_verify_another_leaf_or_a_changed_proof():
    leaves = _leaves(6)
    root = merkle_root(leaves)
    proof = merkle_proof(leaves, 2)

    assert not verify_proof(leaves[3], proof, root)
    assert not verify_proof(keccak(text="outsider"), proof, root)
    assert not verify_proof(leaves[2], proof[:-1], root)
    assert not verify_proof(leaves[2], [keccak(text="forged")] + proof[1:], root)


def test_proof_of_a_missing_index_is_an_error():
    with pytest.raises(IndexError):
        merkle_proof(_leaves(3), 3)


def _sample(second: int, gpu_index: int) -> GpuSample:
    return GpuSample(
        timestamp=1_767_225_600 + second,
        gpu_index=gpu_index,
        uuid=f"GPU-00000000-0000-4000-8000-00000000000{gpu_index}",
        name="NVIDIA H100 80GB HBM3",
        gpu_util_pct=50 + second,
        mem_util_pct=20,
        mem_used_mib=1_000,
        mem_total_mib=81_559,
        source="nvml",
    )


def test_sample_leaves_hash_the_canonical_bytes_and_ignore_arrival_order():
    samples = [_sample(second, gpu) for second in range(4) for gpu in range(2)]

    assert leaf_hash(samples[0]) == keccak(samples[0].canonical_bytes())
    assert sorted_leaves(samples) == sorted_leaves(reversed(samples))
    assert merkle_root(sorted_leaves(samples)) != merkle_root(sorted_leaves(samples[:-1]))

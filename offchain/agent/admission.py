"""Whether this machine can serve a rental, decided before the agent starts it: a rental it cannot serve is
declined at once (`RentalEscrow.decline`: the renter gets the whole deposit back, the provider is not slashed and
its declines counter goes up) instead of being left to time out.

The rules: every GPU of the offer is one this machine's telemetry sees; the job has an image (its own or the
provider's default); it asks for no more memory or CPUs than the offer's GPUs bring (`ContainerSettings`
allowances per GPU); and it asks for network egress only from an offer that allows it on a machine whose provider
allows it. Whether the image can be had is the engine's to say (`Engine.ensure_image`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from offchain.agent.containers import ContainerSettings
from offchain.agent.jobspec import JobSpec
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.status import DeclineReason


class RentalRefused(Exception):
    """The rental cannot be served here, for `reason` (explained in `detail`, which the renter can read)."""

    def __init__(self, reason: DeclineReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Allowance:
    """What a job gets: its image, memory, CPUs and whether it may reach out."""

    image: str
    memory_mib: int
    cpus: float
    egress: bool


def offer_gpus_here(uuid_hashes: Iterable[bytes], local_uuids: Iterable[str], offer_id: int) -> tuple[str, ...]:
    """The UUIDs of the offer's GPUs (given by their on-chain hashes), in the offer's order; refuses the rental
    when any is not on this machine."""
    here = {gpu_uuid_hash(uuid): uuid for uuid in local_uuids}
    hashes = list(uuid_hashes)
    missing = [h for h in hashes if h not in here]
    if missing:
        raise RentalRefused(
            DeclineReason.GPUS_UNAVAILABLE,
            f"{len(missing)} GPU(s) of offer {offer_id} are not on the provider's machine "
            f"(first: 0x{missing[0].hex()})",
        )
    return tuple(here[h] for h in hashes)


def admit(spec: JobSpec, settings: ContainerSettings, *, gpu_count: int, offer_egress: bool) -> Allowance:
    """What the job may use, or `RentalRefused` when it asks for what the offer does not give."""
    image = spec.image or settings.default_image
    if image is None:
        raise RentalRefused(
            DeclineReason.SPEC_INVALID, "the job spec names no container image and this provider sets no default image"
        )
    memory = settings.memory_mib_per_gpu * gpu_count
    cpus = settings.cpus_per_gpu * gpu_count
    wanted = spec.resources
    if wanted.memory_mib is not None and wanted.memory_mib > memory:
        raise RentalRefused(
            DeclineReason.EXCEEDS_OFFER,
            f"the job asks for {wanted.memory_mib} MiB of memory; the offer gives {memory} MiB",
        )
    if wanted.cpus is not None and wanted.cpus > cpus:
        raise RentalRefused(
            DeclineReason.EXCEEDS_OFFER, f"the job asks for {wanted.cpus:g} CPUs; the offer gives {cpus:g}"
        )
    egress = spec.network == "egress"
    if egress and not (offer_egress and settings.allow_egress):
        where = "the offer does not allow it" if not offer_egress else "the provider's machine does not allow it"
        raise RentalRefused(DeclineReason.EXCEEDS_OFFER, f"the job asks for network egress; {where}")
    return Allowance(image=image, memory_mib=wanted.memory_mib or memory, cpus=wanted.cpus or cpus, egress=egress)

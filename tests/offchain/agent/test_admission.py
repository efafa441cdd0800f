"""What the agent refuses before it starts a rental: the offer's GPUs not here, no image, more memory, CPUs or
network than the offer gives."""

from __future__ import annotations

import pytest

from offchain.agent.admission import Allowance, RentalRefused, admit, offer_gpus_here
from offchain.agent.containers import ContainerSettings
from offchain.agent.jobspec import JobResources, JobSpec
from offchain.protocol.messages import gpu_uuid_hash
from offchain.protocol.status import DeclineReason

UUIDS = ("GPU-aaaaaaaa-0000-4000-8000-000000000001", "GPU-aaaaaaaa-0000-4000-8000-000000000002")
SETTINGS = ContainerSettings(
    memory_mib_per_gpu=1024, cpus_per_gpu=2, allow_egress=True, default_image="localhost/gpuex/job:busybox"
)


def test_the_offers_gpus_in_the_offers_order():
    hashes = [gpu_uuid_hash(u) for u in reversed(UUIDS)]

    assert offer_gpus_here(hashes, UUIDS, offer_id=3) == tuple(reversed(UUIDS))


def test_an_offer_gpu_not_on_this_machine_is_refused():
    with pytest.raises(RentalRefused) as refused:
        offer_gpus_here([gpu_uuid_hash(UUIDS[0]), gpu_uuid_hash("GPU-elsewhere")], UUIDS, offer_id=3)

    assert refused.value.reason is DeclineReason.GPUS_UNAVAILABLE and "1 GPU(s) of offer 3" in refused.value.detail


def test_a_job_gets_the_offers_whole_allowance_by_default():
    allowance = admit(JobSpec(command=("sh",)), SETTINGS, gpu_count=2, offer_egress=False)

    assert allowance == Allowance(image="localhost/gpuex/job:busybox", memory_mib=2048, cpus=4, egress=False)


def test_a_job_gets_what_it_asks_within_the_allowance():
    spec = JobSpec(
        command=("sh",), image="busybox:1.36", network="egress", resources=JobResources(memory_mib=512, cpus=1.5)
    )

    assert admit(spec, SETTINGS, gpu_count=1, offer_egress=True) == Allowance("busybox:1.36", 512, 1.5, True)


@pytest.mark.parametrize(
    "spec, settings, offer_egress, reason, words",
    [
        (JobSpec(command=("sh",)), ContainerSettings(), False, DeclineReason.SPEC_INVALID, "no container image"),
        (
            JobSpec(command=("sh",), resources=JobResources(memory_mib=4096)),
            SETTINGS,
            False,
            DeclineReason.EXCEEDS_OFFER,
            "4096 MiB",
        ),
        (
            JobSpec(command=("sh",), resources=JobResources(cpus=8)),
            SETTINGS,
            False,
            DeclineReason.EXCEEDS_OFFER,
            "8 CPUs",
        ),
        (
            JobSpec(command=("sh",), network="egress"),
            SETTINGS,
            False,
            DeclineReason.EXCEEDS_OFFER,
            "the offer does not allow it",
        ),
        (
            JobSpec(command=("sh",), network="egress"),
            SETTINGS.model_copy(update={"allow_egress": False}),
            True,
            DeclineReason.EXCEEDS_OFFER,
            "machine does not allow it",
        ),
    ],
)
def test_what_the_offer_does_not_give_is_refused(spec, settings, offer_egress, reason, words):
    with pytest.raises(RentalRefused) as refused:
        admit(spec, settings, gpu_count=2, offer_egress=offer_egress)

    assert refused.value.reason is reason and words in refused.value.detail

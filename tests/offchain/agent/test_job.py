"""The job supervisor: exit codes, logs, result digests, stopping a process group, timeouts, stale jobs, and the
container command line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from eth_utils import keccak

from offchain.agent.job import (
    ZERO_DIGEST,
    ContainerRuntime,
    JobOutcome,
    SupervisedJob,
    container_argv,
    kill_stale_job,
    plan_job,
    processes_with_token,
)
from offchain.agent.jobspec import JobSpec
from offchain.processes import process_alive

UUIDS = ("GPU-aaaaaaaa-0000-4000-8000-000000000001", "GPU-aaaaaaaa-0000-4000-8000-000000000002")
PY = sys.executable
# A job that starts a child which writes its pid and sleeps; the parent waits for it.
PARENT_AND_CHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "\"import os, time; open('child.pid', 'w').write(str(os.getpid())); time.sleep(300)\"])\n"
    "child.wait()\n"
)


def python_spec(code: str, **fields) -> JobSpec:
    return JobSpec(command=(PY, "-c", code), **fields)


def run_job(spec: JobSpec, rental_dir: Path, *, grace: float = 2.0, deadline: float | None = None) -> JobOutcome:
    async def main() -> JobOutcome:
        job = SupervisedJob(plan_job(spec, rental_id=7, rental_dir=rental_dir, gpu_uuids=UUIDS), grace, deadline)
        await job.start()
        return await asyncio.wait_for(job.wait(), 30)

    return asyncio.run(main())


def wait_for_file(path: Path, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def test_zero_exit_is_success_and_digest_is_of_stdout(tmp_path):
    outcome = run_job(python_spec("print('hello gpu')"), tmp_path)

    assert outcome == JobOutcome(exit_code=0, result_digest=keccak(b"hello gpu\n"), timed_out=False, stopped=False)
    assert outcome.succeeded
    assert (tmp_path / "stdout.log").read_bytes() == b"hello gpu\n"


def test_nonzero_exit_code_is_captured_and_stderr_logged(tmp_path):
    outcome = run_job(python_spec("import sys; sys.stderr.write('boom'); sys.exit(3)"), tmp_path)

    assert outcome.exit_code == 3
    assert not outcome.succeeded
    assert (tmp_path / "stderr.log").read_text() == "boom"


def test_digest_is_of_the_result_file_when_the_spec_names_one(tmp_path):
    spec = python_spec("open('out/model.bin', 'wb').write(b'weights'); print('noise')", working_dir="run",
                       result_file="out/model.bin")
    (tmp_path / "work" / "run" / "out").mkdir(parents=True)

    assert run_job(spec, tmp_path).result_digest == keccak(b"weights")


def test_missing_result_file_gives_the_zero_digest(tmp_path):
    spec = python_spec("print('forgot to save')", result_file="model.bin")

    assert run_job(spec, tmp_path).result_digest == ZERO_DIGEST


def test_job_sees_its_env_and_the_agent_variables_win(tmp_path):
    spec = python_spec(
        "import os; print(os.environ['MODEL'], os.environ['CUDA_VISIBLE_DEVICES'], os.environ['GPUEX_RENTAL_ID'],"
        " os.getcwd() == os.environ['HOME'])",
        env={"MODEL": "llama", "CUDA_VISIBLE_DEVICES": "0"})

    run_job(spec, tmp_path)

    assert (tmp_path / "stdout.log").read_text() == f"llama {','.join(UUIDS)} 7 True\n"


def test_stop_kills_the_whole_process_group(tmp_path):
    async def main() -> tuple[JobOutcome, int]:
        job = SupervisedJob(plan_job(python_spec(PARENT_AND_CHILD), rental_id=7, rental_dir=tmp_path,
                                     gpu_uuids=UUIDS), stop_grace_seconds=2.0)
        await job.start()
        child = int(await asyncio.to_thread(wait_for_file, tmp_path / "work" / "child.pid"))
        assert os.getpgid(child) == job.pid
        await job.stop()
        return await asyncio.wait_for(job.wait(), 10), child

    outcome, child = asyncio.run(main())

    assert outcome.exit_code == -signal.SIGTERM
    assert outcome.stopped and not outcome.timed_out
    assert not process_alive(child)


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open('ready', 'w').write('1'); time.sleep(300)")

    async def main() -> tuple[JobOutcome, float]:
        job = SupervisedJob(plan_job(python_spec(code), rental_id=7, rental_dir=tmp_path, gpu_uuids=UUIDS),
                            stop_grace_seconds=0.5)
        await job.start()
        await asyncio.to_thread(wait_for_file, tmp_path / "work" / "ready")
        started = time.monotonic()
        await job.stop()
        return await asyncio.wait_for(job.wait(), 10), time.monotonic() - started

    outcome, took = asyncio.run(main())

    assert outcome.exit_code == -signal.SIGKILL
    assert 0.5 <= took < 5


def test_timeout_stops_the_job_and_counts_as_failure(tmp_path):
    started = time.time()
    outcome = run_job(python_spec("import time; time.sleep(300)"), tmp_path, deadline=time.time() + 0.5)

    assert outcome.timed_out and not outcome.stopped and not outcome.succeeded
    assert outcome.exit_code == -signal.SIGTERM
    assert time.time() - started < 10


def test_children_left_behind_by_an_exiting_job_are_stopped(tmp_path):
    code = ("import subprocess, sys\n"
            "subprocess.Popen([sys.executable, '-c', "
            "\"import os, time; open('orphan.pid', 'w').write(str(os.getpid())); time.sleep(300)\"])\n"
            "import time\n"
            "while True:\n"
            "    try:\n"
            "        if open('orphan.pid').read(): break\n"
            "    except FileNotFoundError: time.sleep(0.02)\n")

    outcome = run_job(python_spec(code), tmp_path)

    assert outcome.exit_code == 0
    assert not process_alive(int((tmp_path / "work" / "orphan.pid").read_text()))


def test_kill_stale_job_finds_the_processes_by_token_only(tmp_path):
    launch = plan_job(python_spec(PARENT_AND_CHILD), rental_id=7, rental_dir=tmp_path, gpu_uuids=UUIDS)
    bystander = plan_job(python_spec("import time; time.sleep(300)"), rental_id=8, rental_dir=tmp_path / "b",
                         gpu_uuids=UUIDS)

    async def main() -> int:
        job, other = SupervisedJob(launch, 1.0), SupervisedJob(bystander, 1.0)
        await job.start()
        await other.start()
        await asyncio.to_thread(wait_for_file, tmp_path / "work" / "child.pid")
        found = await kill_stale_job(launch.token, None, grace_seconds=2.0)
        await asyncio.wait_for(job.wait(), 10)
        assert processes_with_token(bystander.token), "a job with another token was touched"
        await other.stop()
        return found

    assert asyncio.run(main()) == 2
    assert processes_with_token(launch.token) == []


def test_docker_command_line(tmp_path):
    spec = JobSpec(command=("python", "train.py"), args=("--epochs", "3"), env={"B": "2", "A": "1"},
                   working_dir="src", image="ghcr.io/acme/train:1.0")

    launch = plan_job(spec, rental_id=0x1_00000002, rental_dir=tmp_path, gpu_uuids=UUIDS,
                      runtime=ContainerRuntime.DOCKER)

    name = f"gpuex-100000002-{launch.token[:12]}"
    assert launch.argv == (
        "docker", "run", "--rm", "--init", "--name", name,
        "--volume", f"{tmp_path / 'work'}:/workspace", "--workdir", "/workspace/src",
        "--gpus", f'"device={UUIDS[0]},{UUIDS[1]}"',
        "--env", "A", "--env", "B", "--env", "CUDA_VISIBLE_DEVICES", "--env", "GPUEX_JOB_TOKEN",
        "--env", "GPUEX_RENTAL_ID",
        "ghcr.io/acme/train:1.0", "python", "train.py", "--epochs", "3",
    )
    assert launch.kill_argv == ("docker", "kill", name)
    assert launch.env["A"] == "1" and launch.env["GPUEX_JOB_TOKEN"] == launch.token
    assert launch.cwd == tmp_path / "work" / "src"


def test_podman_exposes_each_gpu_as_a_cdi_device(tmp_path):
    spec = JobSpec(command=("nvidia-smi",), image="docker.io/nvidia/cuda:12.4.0-base-ubuntu22.04")

    argv = container_argv(ContainerRuntime.PODMAN, spec, name="n", workspace=tmp_path, gpu_uuids=UUIDS,
                          env_names=[])

    assert argv == ("podman", "run", "--rm", "--init", "--name", "n", "--volume", f"{tmp_path}:/workspace",
                    "--workdir", "/workspace", "--device", f"nvidia.com/gpu={UUIDS[0]}",
                    "--device", f"nvidia.com/gpu={UUIDS[1]}", "docker.io/nvidia/cuda:12.4.0-base-ubuntu22.04",
                    "nvidia-smi")


def test_an_image_without_a_configured_runtime_is_refused(tmp_path):
    spec = JobSpec(command=("true",), image="busybox")

    with pytest.raises(ValueError, match="no container runtime"):
        plan_job(spec, rental_id=1, rental_dir=tmp_path, gpu_uuids=UUIDS)

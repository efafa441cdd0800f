"""Jobs in real podman containers: exit codes, logs, result digests, the environment, limits, stopping, timeouts,
taking over a container after a restart; and the bare-process mode's process groups and stale jobs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tarfile
import time
from pathlib import Path

import pytest
from eth_utils import keccak

from offchain.agent.bareprocess import BareProcessJob, kill_stale_job, new_token, processes_with_token
from offchain.agent.containers import ContainerPlan, ContainerSettings, Engine, labels
from offchain.agent.job import NOT_STARTED_EXIT_CODE, ZERO_DIGEST, ContainerJob, JobOutcome
from offchain.agent.jobspec import JobSpec
from offchain.agent.logs import LogFormat, read_chunks
from offchain.agent.workspace import RentalFiles
from offchain.ops.processes import process_alive

UUIDS = ("GPU-aaaaaaaa-0000-4000-8000-000000000001", "GPU-aaaaaaaa-0000-4000-8000-000000000002")
SETTINGS = ContainerSettings(memory_mib_per_gpu=64, cpus_per_gpu=1, pids_limit=64)
OWNER = (SETTINGS.uid, SETTINGS.gid)
PY = sys.executable


def container_job(
    tmp_path: Path,
    image: str,
    script: str,
    *,
    env: dict[str, str] | None = None,
    output_dir: str = "out",
    working_dir: str = ".",
    deadline: float | None = None,
    grace: float = 2.0,
    memory_mib: int = 64,
    name: str | None = None,
) -> tuple[ContainerJob, RentalFiles]:
    files = RentalFiles(tmp_path / "rental")
    files.prepare(working_dir, OWNER)
    plan = ContainerPlan(
        name=name or f"gpuex-test-{os.urandom(6).hex()}",
        image=image,
        argv=("sh", "-c", script),
        workspace=files.work,
        working_dir=working_dir,
        env_file=files.env_file,
        log_path=files.container_log,
        gpu_uuids=(),
        memory_mib=memory_mib,
        cpus=1,
        egress=False,
        labels=labels("0xtest", 7),
    )
    job = ContainerJob(
        Engine(SETTINGS),
        plan,
        env or {},
        output_dir=output_dir,
        results=files.results,
        deadline=deadline,
        stop_grace_seconds=grace,
        timeout_seconds=None if deadline is None else 1,
    )
    return job, files


async def finish(job: ContainerJob, *, stop_after: float | None = None) -> JobOutcome:
    try:
        await job.start()
        if stop_after is not None:
            await asyncio.sleep(stop_after)
            await job.stop()
        return await asyncio.wait_for(job.wait(), 60)
    finally:
        await job.engine.remove(job.name)


def run(job: ContainerJob, **kwargs) -> JobOutcome:
    return asyncio.run(finish(job, **kwargs))


def output(files: RentalFiles, stream: str = "stdout") -> bytes:
    chunks, _ = read_chunks(files.container_log, LogFormat.K8S_FILE)
    return b"".join(c.data for c in chunks if c.stream == stream)


def test_zero_exit_is_success_and_the_digest_is_of_stdout(tmp_path, job_image):
    job, files = container_job(tmp_path, job_image, "echo hello gpu; printf partial; echo oops >&2")

    outcome = run(job)

    assert (outcome.exit_code, outcome.timed_out, outcome.stopped, outcome.reason) == (0, False, False, None)
    assert outcome.result_digest == keccak(b"hello gpu\npartial")
    assert output(files) == b"hello gpu\npartial" and output(files, "stderr") == b"oops\n"


def test_nonzero_exit_code_is_captured_with_its_reason(tmp_path, job_image):
    outcome = run(container_job(tmp_path, job_image, "exit 3")[0])

    assert (outcome.exit_code, outcome.reason) == (3, "exited with code 3")
    assert not outcome.succeeded


def test_the_output_folder_is_packed_and_its_tar_is_the_digest(tmp_path, job_image):
    job, files = container_job(
        tmp_path,
        job_image,
        "mkdir -p out/ckpt && printf weights > out/ckpt/model.bin && echo noise && "
        "ln -s /etc/passwd out/passwd && ln -s ckpt out/latest",
        working_dir="run",
    )

    outcome = run(job)

    assert outcome.result_digest == keccak(files.results.read_bytes())
    with tarfile.open(files.results) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(members["./ckpt/model.bin"]).read() == b"weights"
    assert (members["./passwd"].issym(), members["./passwd"].linkname) == (True, "/etc/passwd"), "kept, not followed"
    assert members["./latest"].issym()
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, "", "")}


@pytest.mark.parametrize(
    "script",
    [
        pytest.param("echo no output folder", id="missing"),
        pytest.param("ln -s /etc out", id="symlink-out"),
        pytest.param("printf x > out", id="a-file"),
    ],
)
def test_without_an_output_folder_the_digest_is_of_stdout(tmp_path, job_image, script):
    job, files = container_job(tmp_path, job_image, script)

    outcome = run(job)

    assert outcome.result_digest == keccak(output(files))
    assert not files.results.exists()


def test_the_job_gets_its_env_through_a_private_file_that_is_gone_after_the_start(tmp_path, job_image):
    job, files = container_job(
        tmp_path,
        job_image,
        'echo "$MODEL|$SPACED|$HOME|$(id -u)"',
        env={"MODEL": "llama", "SPACED": " a=b c ", "HOME": "/workspace"},
    )
    seen: list[int] = []
    engine_run = job.engine.run

    async def run_and_look(plan):
        seen.append(os.stat(plan.env_file).st_mode & 0o777)
        await engine_run(plan)

    job.engine.run = run_and_look

    assert run(job).exit_code == 0
    assert seen == [0o600]
    assert not files.env_file.exists()
    assert output(files) == f"llama| a=b c |/workspace|{SETTINGS.uid}\n".encode()


def test_the_container_is_hardened(tmp_path, job_image):
    """Non-root, no capabilities, no new privileges, read-only root, no network, own pid namespace, limits."""
    script = (
        "id -u; id -g; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
        "touch /etc/x 2>/dev/null && echo root-writable || echo root-read-only; "
        "touch /workspace/ok && echo workspace-writable; "
        "ls /sys/class/net; "
        "ps -o pid | wc -l; "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; "
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; ulimit -n"
    )
    job, files = container_job(tmp_path, job_image, script)

    assert run(job).exit_code == 0
    lines = output(files).decode().split("\n")
    assert lines[0:2] == [str(SETTINGS.uid), str(SETTINGS.gid)]
    assert lines[2].split() == ["CapEff:", "0000000000000000"] and lines[3].split() == ["NoNewPrivs:", "1"]
    assert lines[4:6] == ["root-read-only", "workspace-writable"]
    assert lines[6] == "lo", "only the loopback interface: no network"
    assert int(lines[7]) <= 5, "the job sees its own processes only"
    assert lines[8:11] == [str(64 * 1024 * 1024), str(SETTINGS.pids_limit), str(SETTINGS.nofile_limit)]
    assert (files.work / "ok").stat().st_uid == SETTINGS.uid


def test_stop_sends_sigterm_and_the_job_may_clean_up(tmp_path, job_image):
    job, files = container_job(
        tmp_path, job_image, "trap 'echo cleaned; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    )

    outcome = run(job, stop_after=1.0)

    assert outcome.stopped and not outcome.timed_out
    assert outcome.reason == "stopped by the provider's agent because the rental ended"
    assert output(files) == b"up\ncleaned\n"


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path, job_image):
    job, _ = container_job(tmp_path, job_image, "trap '' TERM; while true; do sleep 0.1; done", grace=1.0)
    started = time.monotonic()

    outcome = run(job, stop_after=0.5)

    assert outcome.exit_code == 128 + signal.SIGKILL and outcome.stopped
    assert 1.0 <= time.monotonic() - started < 15


def test_timeout_stops_the_job_and_counts_as_failure(tmp_path, job_image):
    job, _ = container_job(tmp_path, job_image, "sleep 300", deadline=time.time() + 1)

    outcome = run(job)

    assert outcome.timed_out and not outcome.stopped and not outcome.succeeded
    assert "timeout" in outcome.reason


def test_a_job_over_its_memory_limit_is_killed_and_told_why(tmp_path, job_image):
    job, _ = container_job(tmp_path, job_image, "head -c 200000000 /dev/zero | tail", memory_mib=32)

    outcome = run(job)

    assert outcome.exit_code == 128 + signal.SIGKILL
    assert outcome.reason == "killed for using more than its memory limit of 32 MiB"
    assert not Path("oom").exists(), "the engine's out-of-memory marker stays in the rental's folder"


def test_a_fork_bomb_is_contained_by_the_pid_limit(tmp_path, job_image):
    job, files = container_job(
        tmp_path, job_image, "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; echo spawned; exit 0"
    )

    outcome = run(job)

    assert outcome.exit_code in (0, 2)
    assert b"can't fork" in output(files, "stderr") or b"Resource temporarily unavailable" in output(files, "stderr")


def test_a_command_missing_from_the_image_fails_with_a_readable_log(tmp_path, job_image):
    job, files = container_job(tmp_path, job_image, "true")
    job.plan = job.plan.__class__(**{**job.plan.__dict__, "argv": ("/no/such/program",)})

    outcome = run(job)

    assert outcome.exit_code != 0 and not outcome.succeeded
    assert b"/no/such/program" in output(files, "stderr") or b"No such file" in output(files, "stderr")


def test_an_image_that_is_not_here_does_not_start(tmp_path, job_image):
    job, _ = container_job(tmp_path, "localhost/gpuex/no-such-image:1", "true")

    outcome = run(job)

    assert outcome.exit_code == NOT_STARTED_EXIT_CODE and outcome.reason.startswith("could not start")


def test_a_restarted_agent_takes_over_the_running_container(tmp_path, job_image):
    """The first job object is dropped (the agent died); a second one attaches by name and gets the outcome."""
    job, files = container_job(tmp_path, job_image, "echo before; sleep 2; echo after; exit 5")

    async def main() -> JobOutcome:
        await job.start()
        await asyncio.sleep(0.5)
        again = ContainerJob(
            job.engine,
            job.plan,
            {},
            output_dir="out",
            results=files.results,
            deadline=None,
            stop_grace_seconds=2,
            timeout_seconds=None,
        )
        await again.attach()
        assert again.host_pid is not None and process_alive(again.host_pid)
        try:
            return await asyncio.wait_for(again.wait(), 30)
        finally:
            await job.engine.remove(job.name)

    outcome = asyncio.run(main())

    assert outcome.exit_code == 5 and outcome.result_digest == keccak(b"before\nafter\n")


def test_engine_finds_containers_by_label_and_removes_them(tmp_path, job_image):
    job, _ = container_job(tmp_path, job_image, "sleep 300")

    async def main() -> tuple[list[str], list[str]]:
        await job.start()
        found = await job.engine.labelled("gpuex.agent", "0xtest")
        await job.engine.remove(job.name)
        return found, await job.engine.labelled("gpuex.agent", "0xtest")

    found, after = asyncio.run(main())

    assert job.name in found and job.name not in after


# ------------------------------------------------------------------ bare processes (--unsafe-bare-process)

# A job that starts a child which writes its pid and sleeps; the parent waits for it.
PARENT_AND_CHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "\"import os, time; open('child.pid', 'w').write(str(os.getpid())); time.sleep(300)\"])\n"
    "child.wait()\n"
)


def bare_job(
    tmp_path: Path, code: str, *, rental_id: int = 7, deadline: float | None = None, grace: float = 2.0, **fields
) -> BareProcessJob:
    spec = JobSpec(command=(PY, "-c", code), **fields)
    return BareProcessJob(
        spec,
        RentalFiles(tmp_path / str(rental_id)),
        rental_id=rental_id,
        gpu_uuids=UUIDS,
        token=new_token(),
        deadline=deadline,
        stop_grace_seconds=grace,
    )


def wait_for_file(path: Path, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def run_bare(job: BareProcessJob) -> JobOutcome:
    async def main() -> JobOutcome:
        await job.start()
        return await asyncio.wait_for(job.wait(), 30)

    return asyncio.run(main())


def test_bare_process_exit_code_digest_and_env(tmp_path):
    job = bare_job(
        tmp_path,
        "import os; print(os.environ['MODEL'], os.environ['CUDA_VISIBLE_DEVICES'], "
        "os.environ['GPUEX_RENTAL_ID'], os.getcwd() == os.environ['HOME']); raise SystemExit(3)",
        env={"MODEL": "llama"},
    )

    outcome = run_bare(job)

    line = f"llama {','.join(UUIDS)} 7 True\n".encode()
    assert (outcome.exit_code, outcome.result_digest, outcome.reason) == (3, keccak(line), "exited with code 3")
    assert job.files.stdout_log.read_bytes() == line


def test_bare_process_stop_kills_the_whole_process_group(tmp_path):
    job = bare_job(tmp_path, PARENT_AND_CHILD)

    async def main() -> tuple[JobOutcome, int]:
        await job.start()
        child = int(await asyncio.to_thread(wait_for_file, job.files.work / "child.pid"))
        assert os.getpgid(child) == job.host_pid
        await job.stop()
        return await asyncio.wait_for(job.wait(), 10), child

    outcome, child = asyncio.run(main())

    assert outcome.exit_code == -signal.SIGTERM and outcome.stopped and not outcome.timed_out
    assert not process_alive(child)


def test_bare_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    job = bare_job(
        tmp_path,
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open('ready', 'w').write('1'); time.sleep(300)",
        grace=0.5,
    )

    async def main() -> tuple[JobOutcome, float]:
        await job.start()
        await asyncio.to_thread(wait_for_file, job.files.work / "ready")
        started = time.monotonic()
        await job.stop()
        return await asyncio.wait_for(job.wait(), 10), time.monotonic() - started

    outcome, took = asyncio.run(main())

    assert outcome.exit_code == -signal.SIGKILL
    assert 0.5 <= took < 5


def test_bare_process_timeout_counts_as_failure(tmp_path):
    outcome = run_bare(bare_job(tmp_path, "import time; time.sleep(300)", deadline=time.time() + 0.5))

    assert outcome.timed_out and not outcome.stopped and not outcome.succeeded
    assert outcome.exit_code == -signal.SIGTERM


def test_bare_process_children_left_behind_are_stopped(tmp_path):
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', "
        "\"import os, time; open('orphan.pid', 'w').write(str(os.getpid())); time.sleep(300)\"])\n"
        "import time\n"
        "while True:\n"
        "    try:\n"
        "        if open('orphan.pid').read(): break\n"
        "    except FileNotFoundError: time.sleep(0.02)\n"
    )
    job = bare_job(tmp_path, code)

    assert run_bare(job).exit_code == 0
    assert not process_alive(int((job.files.work / "orphan.pid").read_text()))


def test_kill_stale_job_finds_the_processes_by_token_only(tmp_path):
    job, bystander = (
        bare_job(tmp_path, PARENT_AND_CHILD),
        bare_job(tmp_path, "import time; time.sleep(300)", rental_id=8),
    )

    async def main() -> int:
        await job.start()
        await bystander.start()
        await asyncio.to_thread(wait_for_file, job.files.work / "child.pid")
        found = await kill_stale_job(job.token, grace_seconds=2.0)
        await asyncio.wait_for(job.wait(), 10)
        assert processes_with_token(bystander.token), "a job with another token was touched"
        await bystander.stop()
        return found

    assert asyncio.run(main()) == 2
    assert processes_with_token(job.token) == []


def test_bare_process_that_cannot_start_is_reported_not_raised(tmp_path):
    job = BareProcessJob(
        JobSpec(command=("/nonexistent/bin/train",)),
        RentalFiles(tmp_path / "r"),
        rental_id=1,
        gpu_uuids=UUIDS,
        token=new_token(),
        deadline=None,
        stop_grace_seconds=1,
    )

    outcome = run_bare(job)

    assert outcome.exit_code == NOT_STARTED_EXIT_CODE and outcome.result_digest == ZERO_DIGEST
    assert outcome.reason.startswith("could not start")

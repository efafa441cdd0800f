"""The hardened `run` command line for podman and docker, the env file, engine timestamps, the engine logs and
safe paths in a workspace a job controls."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eth_utils import keccak
from pydantic import ValidationError

from offchain.agent.containers import (
    ContainerEngine,
    ContainerPlan,
    ContainerSettings,
    _timestamp,
    client_env,
    labels,
    run_argv,
    write_env_file,
)
from offchain.agent.logs import LogFormat, read_chunks, stream_digest
from offchain.agent.workspace import RentalFiles, UnsafePath, make_dirs_beneath, open_beneath

UUIDS = ("GPU-aaaaaaaa-0000-4000-8000-000000000001", "GPU-aaaaaaaa-0000-4000-8000-000000000002")


def plan(tmp_path: Path, **changes) -> ContainerPlan:
    values = dict(
        name="gpuex-7-abc",
        image="ghcr.io/acme/train:1.0",
        argv=("python", "train.py", "--epochs", "3"),
        workspace=tmp_path / "work",
        working_dir="src",
        env_file=tmp_path / "job.env",
        log_path=tmp_path / "container.log",
        gpu_uuids=UUIDS,
        memory_mib=2048,
        cpus=1.5,
        egress=False,
        labels=labels("0xAgent", 7),
    )
    return ContainerPlan(**{**values, **changes})


def test_podman_command_line(tmp_path):
    argv = run_argv(ContainerSettings(), plan(tmp_path))

    assert argv == [
        "podman",
        "run",
        "--detach",
        "--init",
        "--name",
        "gpuex-7-abc",
        "--label",
        "gpuex.agent=0xAgent",
        "--label",
        "gpuex.rental=7",
        "--user",
        "65534:65534",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,size=1024m",
        "--shm-size",
        "1024m",
        "--memory",
        "2048m",
        "--memory-swap",
        "2048m",
        "--cpus",
        "1.5",
        "--pids-limit",
        "1024",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=4096:4096",
        "--volume",
        f"{tmp_path / 'work'}:/workspace:rw",
        "--workdir",
        "/workspace/src",
        "--env-file",
        str(tmp_path / "job.env"),
        "--hostname",
        "gpuex-job",
        "--pull",
        "never",
        "--entrypoint",
        "",
        "--read-only-tmpfs=false",
        "--log-driver",
        "k8s-file",
        "--log-opt",
        f"path={tmp_path / 'container.log'}",
        "--network",
        "none",
        "--device",
        f"nvidia.com/gpu={UUIDS[0]}",
        "--device",
        f"nvidia.com/gpu={UUIDS[1]}",
        "ghcr.io/acme/train:1.0",
        "python",
        "train.py",
        "--epochs",
        "3",
    ]


def test_docker_command_line_exposes_the_gpus_by_uuid_and_keeps_a_json_log(tmp_path):
    argv = run_argv(
        ContainerSettings(engine=ContainerEngine.DOCKER, global_args=("--context", "gpu")), plan(tmp_path, egress=True)
    )

    assert argv[:3] == ["docker", "--context", "gpu"]
    assert argv[argv.index("--gpus") + 1] == f'"device={UUIDS[0]},{UUIDS[1]}"'
    assert ["--log-driver", "json-file"] == argv[argv.index("--log-driver") : argv.index("--log-driver") + 2]
    assert "--network" not in argv, "egress: the engine's default network"
    assert "--read-only-tmpfs=false" not in argv and "--device" not in argv


def test_what_the_renter_controls_comes_after_the_image(tmp_path):
    """The command is the image's arguments: a command that looks like an option is never the engine's."""
    argv = run_argv(ContainerSettings(), plan(tmp_path, argv=("--privileged", "-v", "/:/host")))

    assert argv[-4:] == ["ghcr.io/acme/train:1.0", "--privileged", "-v", "/:/host"]
    assert argv.count("--privileged") == 1


@pytest.mark.parametrize("user", ["0:0", "0:100", "100:0", "root", "65534"])
def test_jobs_never_run_as_root(user):
    with pytest.raises(ValidationError):
        ContainerSettings(user=user)


def test_env_file_is_private_and_refuses_line_breaks(tmp_path):
    path = tmp_path / "job.env"
    write_env_file(path, {"A": "1", "B": " x=y "})

    assert path.read_text() == "A=1\nB= x=y \n"
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        write_env_file(path, {"A": "1\nLD_PRELOAD=/x.so"})


def test_the_engine_client_gets_none_of_the_agents_secrets(monkeypatch):
    monkeypatch.setenv("GPUEX_AGENT_KEY", "0x" + "11" * 32)
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")

    env = client_env()

    assert "GPUEX_AGENT_KEY" not in env and "LD_PRELOAD" not in env
    assert env["XDG_RUNTIME_DIR"] == "/run/user/1000" and "PATH" in env


def test_engine_timestamps():
    assert _timestamp("2026-12-04T15:12:56.117978802Z") == pytest.approx(1796397176.117978)
    assert _timestamp("2026-12-04T15:12:56.117978802+00:00") == pytest.approx(1796397176.117978)
    assert _timestamp("0001-01-01T00:00:00Z") is None and _timestamp("") is None


def test_k8s_log_partial_lines_and_resuming_from_an_offset(tmp_path):
    log = tmp_path / "container.log"
    log.write_bytes(
        b"2026-12-04T15:09:53.7+00:00 stdout F out1\n"
        b"2026-12-04T15:09:53.7+00:00 stdout P part\n"
        b"2026-12-04T15:09:53.8+00:00 stderr F err 1\n"
        b"2026-12-04T15:09:54.7+00:00 stdout F ial\n"
        b"2026-12-04T15:09:54.8+00:00 stdout F \n"
        b"2026-12-04T15:09:54.9+00:00 stdout F not yet whole"
    )

    chunks, offset = read_chunks(log, LogFormat.K8S_FILE)

    assert [(c.stream, c.data) for c in chunks] == [
        ("stdout", b"out1\n"),
        ("stdout", b"part"),
        ("stderr", b"err 1\n"),
        ("stdout", b"ial\n"),
        ("stdout", b"\n"),
    ]
    with log.open("ab") as stream:
        stream.write(b"\n")
    rest, end = read_chunks(log, LogFormat.K8S_FILE, offset)
    assert [c.data for c in rest] == [b"not yet whole\n"] and end == log.stat().st_size
    assert stream_digest(log, LogFormat.K8S_FILE) == keccak(b"out1\npartial\n\nnot yet whole\n")


def test_docker_json_log(tmp_path):
    log = tmp_path / "container.log"
    log.write_text(
        "".join(
            json.dumps(e) + "\n"
            for e in (
                {"log": "hello\n", "stream": "stdout", "time": "t1"},
                {"log": "no newline", "stream": "stderr", "time": "t2"},
                {"log": "x", "stream": "other", "time": "t3"},
            )
        )
    )

    chunks, _ = read_chunks(log, LogFormat.JSON_FILE)

    assert [(c.stream, c.data, c.time) for c in chunks] == [
        ("stdout", b"hello\n", "t1"),
        ("stderr", b"no newline", "t2"),
    ]


def test_workspace_paths_never_go_through_a_link(tmp_path):
    files = RentalFiles(tmp_path / "rental")
    files.prepare("a/b", None)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("key")
    (files.work / "link").symlink_to(outside)
    (files.work / "a" / "file").symlink_to(outside / "secret")

    with pytest.raises(UnsafePath):
        make_dirs_beneath(files.work, "link/c", None)
    assert not (outside / "c").exists()
    with pytest.raises(UnsafePath):
        open_beneath(files.work, "link/secret")
    with pytest.raises(UnsafePath):
        open_beneath(files.work, "a/file")
    assert open_beneath(files.work, "a/missing") is None
    assert open_beneath(files.work, "a") is None, "a folder is not a result file"
    assert oct(files.root.stat().st_mode & 0o777) == oct(0o700)

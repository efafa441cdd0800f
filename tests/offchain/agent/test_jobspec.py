"""Job specs: the canonical JSON and hash a renter puts on chain, and where the agent finds a spec's body."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from eth_utils import keccak
from pydantic import ValidationError

from offchain.agent.jobspec import JobResources, JobSpec, JobSpecInvalid, JobSpecMissing, JobSpecStore, parse_spec

SPEC = JobSpec(
    command=("python", "train.py"),
    args=("--lr", "3e-4"),
    env={"WANDB_MODE": "offline"},
    working_dir="src",
    timeout_seconds=3600,
    output_dir="checkpoints",
    secret_env=("HF_TOKEN",),
)


def test_canonical_json_is_sorted_compact_and_complete():
    assert JobSpec(command=("nvidia-smi",)).canonical_json() == (
        b'{"args":[],"command":["nvidia-smi"],"env":{},"image":null,"network":"none","output_dir":"out",'
        b'"resources":{"cpus":null,"memory_mib":null},"secret_env":[],"timeout_seconds":null,"working_dir":"."}'
    )


def test_hash_is_keccak_of_the_canonical_json():
    assert SPEC.spec_hash() == keccak(SPEC.canonical_json())


def test_hash_ignores_key_order_and_whitespace_of_the_body():
    shuffled = json.dumps(dict(reversed(list(json.loads(SPEC.canonical_json()).items()))), indent=4)

    assert JobSpec.model_validate_json(shuffled).spec_hash() == SPEC.spec_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"command": ("python", "eval.py")},
        {"args": ("--lr", "1e-4")},
        {"env": {"WANDB_MODE": "online"}},
        {"working_dir": "."},
        {"image": "ghcr.io/acme/train:1"},
        {"timeout_seconds": 3601},
        {"output_dir": "out"},
        {"secret_env": ()},
        {"network": "egress"},
        {"resources": JobResources(memory_mib=1024)},
    ],
)
def test_every_field_changes_the_hash(change):
    assert SPEC.model_copy(update=change).spec_hash() != SPEC.spec_hash()


def test_non_ascii_is_escaped_so_every_language_hashes_the_same_bytes():
    spec = JobSpec(command=("echo", "grüße"))

    assert b'"grue' not in spec.canonical_json() and b"gr\\u00fc\\u00dfe" in spec.canonical_json()


@pytest.mark.parametrize(
    "fields",
    [
        {"command": ()},
        {"command": ("a",), "working_dir": "/etc"},
        {"command": ("a",), "working_dir": "../other"},
        {"command": ("a",), "output_dir": "../../secret"},
        {"command": ("a",), "output_dir": "/etc"},
        {"command": ("a",), "env": {"BAD-NAME": "x"}},
        {"command": ("a",), "timeout_seconds": 0},
        {"command": ("a",), "unknown": 1},
        {"command": ("",)},
        {"command": ("a\x00b",)},
        {"command": ("a",), "args": ("x" * 8193,)},
        {"command": ("a",), "args": ("x",) * 256},
        {"command": ("a",), "working_dir": "x" * 300},
        {"command": ("a",), "working_dir": "/".join(["abc"] * 300)},
        {"command": ("a",), "working_dir": "a\x00b"},
        {"command": ("a",), "output_dir": "r" * 256},
        {"command": ("a",), "secret_env": ("LD_PRELOAD",)},
        {"command": ("a",), "secret_env": ("A", "A")},
        {"command": ("a",), "secret_env": ("A",), "env": {"A": "1"}},
        {"command": ("a",), "secret_env": tuple(f"S{i}" for i in range(33))},
        {"command": ("a",), "env": {"LD_PRELOAD": "/workspace/evil.so"}},
        {"command": ("a",), "env": {"ld_library_path": "/x"}},
        {"command": ("a",), "env": {"NVIDIA_VISIBLE_DEVICES": "all"}},
        {"command": ("a",), "env": {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}},
        {"command": ("a",), "env": {"CONTAINERS_CONF": "/x"}},
        {"command": ("a",), "env": {"DOCKER_HOST": "tcp://x"}},
        {"command": ("a",), "env": {"GPUEX_RENTAL_ID": "1"}},
        {"command": ("a",), "env": {"OK": "line\nLD_PRELOAD=/x.so"}},
        {"command": ("a",), "env": {"OK": "nul\x00"}},
        {"command": ("a",), "env": {"OK": "x" * 40_000}},
        {"command": ("a",), "env": {f"V{i}": "x" for i in range(129)}},
        {"command": ("a",), "image": "--privileged"},
        {"command": ("a",), "image": "-v=/:/host"},
        {"command": ("a",), "image": "Ubuntu"},
        {"command": ("a",), "image": "busybox@sha256:abc"},
        {"command": ("a",), "image": "a" * 256},
        {"command": ("a",), "timeout_seconds": 40 * 86_400},
        {"command": ("a",), "network": "host"},
        {"command": ("a",), "resources": {"memory_mib": 1}},
        {"command": ("a",), "resources": {"cpus": 0}},
        {"command": ("a",), "resources": {"gpus": 8}},
    ],
)
def test_invalid_specs_are_rejected(fields):
    with pytest.raises(ValidationError):
        JobSpec(**fields)


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "busybox:1.36",
        "localhost/gpuex/job:busybox",
        "ghcr.io/acme/train:1.0",
        "registry.example:5000/team/model-server:v2.1-rc1",
        "docker.io/nvidia/cuda:12.4.0-base-ubuntu22.04",
        "busybox@sha256:" + "ab" * 32,
        "busybox:1.36@sha256:" + "0f" * 32,
    ],
)
def test_image_references_by_tag_or_digest(image):
    assert JobSpec(command=("a",), image=image).image == image


def test_a_command_line_string_is_split_like_a_shell_into_the_canonical_list():
    spec = JobSpec.model_validate({"command": "python train.py --name 'run 1' \"a b\"\\ c"})

    assert spec.command == ("python", "train.py", "--name", "run 1", "a b c")
    assert spec.spec_hash() == JobSpec(command=spec.command).spec_hash()


def test_a_command_line_with_shell_syntax_is_only_words():
    """Nothing is expanded or run by a shell: substitutions, separators and redirections stay literal arguments."""
    spec = JobSpec.model_validate({"command": "echo $(id) `id` ${HOME}; rm -rf / && x | y > /etc/passwd"})

    assert spec.command == (
        "echo", "$(id)", "`id`", "${HOME};", "rm", "-rf", "/", "&&", "x", "|", "y", ">", "/etc/passwd"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("", "the command line is empty"),
        ("   ", "the command line is empty"),
        ("echo 'unbalanced", "cannot split the command line: No closing quotation"),
        ('echo "x', "cannot split the command line: No closing quotation"),
        ("echo x\\", "cannot split the command line: No escaped character"),
        ("a\x00b", "NUL byte"),
    ],
)
def test_a_command_line_string_that_cannot_be_split_is_refused(command, message):
    with pytest.raises(ValidationError, match=message) as raised:
        JobSpec.model_validate({"command": command})
    assert raised.value.errors()[0]["loc"] == ("command",)


def test_a_missing_command_is_named():
    with pytest.raises(ValidationError) as raised:
        JobSpec.model_validate({"image": "busybox"})
    assert raised.value.errors()[0]["loc"] == ("command",) and raised.value.errors()[0]["type"] == "missing"


def test_a_string_command_in_the_renters_body_is_not_canonical():
    """The agent hashes what it is given: a body with a string command is the renter's but not in canonical form."""
    body = b'{"command": "sh -c true"}'

    with pytest.raises(JobSpecInvalid, match="canonical"):
        parse_spec(body, keccak(body))


def test_the_renters_own_invalid_body_is_final_at_once():
    """A body whose keccak256 is the hash on chain is the renter's: invalid means decline, not wait."""
    body = b'{"command": ["sh"], "env": {"LD_PRELOAD": "/workspace/x.so"}}'

    with pytest.raises(JobSpecInvalid, match="env"):
        parse_spec(body, keccak(body))
    with pytest.raises(JobSpecMissing):
        parse_spec(body, keccak(b"another spec"))
    garbage = b"\x00not json"
    with pytest.raises(JobSpecInvalid):
        parse_spec(garbage, keccak(garbage))


def test_the_renters_non_canonical_body_is_invalid():
    body = JobSpec(command=("sh",)).model_dump_json(indent=2).encode()

    with pytest.raises(JobSpecInvalid, match="canonical"):
        parse_spec(body, keccak(body))


def test_store_finds_a_spec_in_its_directory(tmp_path):
    store = JobSpecStore(tmp_path)
    spec_hash = store.put(SPEC)

    assert store.path_of(spec_hash) == tmp_path / f"0x{spec_hash.hex()}.json"
    assert asyncio.run(store.get(spec_hash)) == SPEC


def test_store_refuses_a_body_of_another_hash(tmp_path):
    store = JobSpecStore(tmp_path)
    wanted = SPEC.spec_hash()
    store.path_of(wanted).write_bytes(JobSpec(command=("rm", "-rf", "data")).canonical_json())

    with pytest.raises(JobSpecMissing, match="hashes to"):
        asyncio.run(store.get(wanted))


def test_store_without_url_reports_a_missing_spec(tmp_path):
    with pytest.raises(JobSpecMissing, match="no spec URL"):
        asyncio.run(JobSpecStore(tmp_path).get(SPEC.spec_hash()))


def serve_specs(bodies: dict[str, bytes]):
    """A spec server on loopback: GET /specs/{hash} answers the body for that hash, or 404."""

    async def handler(request: web.Request) -> web.Response:
        body = bodies.get(request.match_info["hash"])
        return web.Response(body=body, content_type="application/json") if body else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/specs/{hash}", handler)
    return web.AppRunner(app)


def fetch_over_http(tmp_path, bodies: dict[str, bytes], spec_hash: bytes) -> JobSpec:
    async def main() -> JobSpec:
        runner = serve_specs(bodies)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            store = JobSpecStore(tmp_path / "specs", f"http://{host}:{port}/specs/{{hash}}", timeout_seconds=5)
            return await store.get(spec_hash)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def test_store_fetches_a_missing_spec_over_http_and_keeps_it(tmp_path):
    spec_hash = SPEC.spec_hash()
    body = json.dumps(json.loads(SPEC.canonical_json()), indent=2).encode()

    assert fetch_over_http(tmp_path, {f"0x{spec_hash.hex()}": body}, spec_hash) == SPEC
    assert asyncio.run(JobSpecStore(tmp_path / "specs").get(spec_hash)) == SPEC


def test_store_reports_an_http_miss(tmp_path):
    with pytest.raises(JobSpecMissing, match="answered 404"):
        fetch_over_http(tmp_path, {}, SPEC.spec_hash())


def test_store_refuses_a_fetched_body_of_another_hash(tmp_path):
    spec_hash = SPEC.spec_hash()
    other = JobSpec(command=("curl", "evil.example")).canonical_json()

    with pytest.raises(JobSpecMissing, match="hashes to"):
        fetch_over_http(tmp_path, {f"0x{spec_hash.hex()}": other}, spec_hash)
    assert not (tmp_path / "specs" / f"0x{spec_hash.hex()}.json").exists()

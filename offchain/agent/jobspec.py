"""The job a renter asks the provider to run, its hash, and where the agent finds its body.

A renter puts `jobSpecHash` on chain when opening a rental: keccak256 of the spec's canonical JSON
(`JobSpec.canonical_json`: every field present, keys sorted, no whitespace, ASCII with `\\u` escapes). The body
itself travels off chain. The agent looks for it, in order:

1. in its spec directory, as `<spec_dir>/0x<hash hex>.json` (put there by the provider or a previous fetch);
2. over HTTP, `GET` of the configured URL template with `{hash}` replaced by `0x<hash hex>`; a body fetched
   this way is saved to the spec directory so a restarted agent does not fetch it again.

Either way the body is parsed and hashed again. A body that is not the renter's (its hash differs) is treated as
no body at all: the agent keeps looking until its wait runs out (`JobSpecMissing`). A body that is the renter's
(its keccak256 is the hash on chain) but breaks a rule below is the renter's mistake, final at once
(`JobSpecInvalid`): the agent declines the rental instead of waiting.

A spec is untrusted input from a stranger, so every field is bounded: lengths and counts, no NUL byte anywhere,
paths relative to the workspace with components a file system accepts, an image reference that can never be read
as an option, and no environment variable that steers the container runtime, the dynamic loader or the GPU
driver (`RESERVED_ENV_PREFIXES`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Literal

import aiohttp
from eth_utils import keccak
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

MAX_SPEC_BYTES = 256 * 1024
MAX_ARGV_ITEMS = 256  # command and args together
MAX_ARG_CHARS = 8192
MAX_ENV_VARS = 128
MAX_ENV_NAME_CHARS = 128
MAX_ENV_VALUE_CHARS = 32 * 1024  # below the 64 KiB line limit of the runtimes' env-file readers
MAX_SECRETS = 32
MAX_PATH_CHARS = 1024
MAX_PATH_COMPONENT_BYTES = 255  # NAME_MAX of every common Linux file system
MAX_IMAGE_CHARS = 255
MAX_TIMEOUT_SECONDS = 31 * 86_400
#: Environment names a spec may not set: they steer the container runtime and its client (`CONTAINERS_*`,
#: `DOCKER_*`, `PODMAN_*`, `BUILDAH_*`), the dynamic loader (`LD_*`), the GPU driver and its container hook
#: (`NVIDIA_*`, `CUDA_VISIBLE_DEVICES`: only the rented GPUs are visible, and the agent says which), or carry what
#: the agent sets itself (`GPUEX_*`).
RESERVED_ENV_PREFIXES = ("LD_", "CONTAINERS_", "DOCKER_", "PODMAN_", "BUILDAH_", "NVIDIA_", "GPUEX_")
RESERVED_ENV_NAMES = frozenset({"CUDA_VISIBLE_DEVICES"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# An OCI image reference as the distribution spec writes it: [registry[:port]/]path[:tag][@algo:digest]. It starts
# with a letter or digit, so it can never be taken for a command-line option.
_IMAGE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)


class JobSpecError(Exception):
    """The spec for a hash cannot be had."""


class JobSpecMissing(JobSpecError):
    """No body of this hash (yet): not found, unreachable, or a body that is not the renter's."""


class JobSpecInvalid(JobSpecError):
    """The renter's own body (its keccak256 is the hash on chain) is not a spec the agent can run."""


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} holds a NUL byte")
    return value


def _env_name(name: str) -> None:
    if len(name) > MAX_ENV_NAME_CHARS or not _ENV_NAME.match(name):
        raise ValueError(f"not an environment variable name: {name[:MAX_ENV_NAME_CHARS]!r}")
    if name in RESERVED_ENV_NAMES or name.upper().startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(
            f"environment variable {name} is reserved: it steers the container runtime, the "
            "loader or the GPUs, which the provider's agent controls"
        )


def _relative_path(value: str, what: str) -> str:
    _no_nul(value, what)
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(f"{what} is longer than {MAX_PATH_CHARS} characters")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{what} must be a relative path inside the rental's workspace: {value!r}")
    for part in path.parts:
        if len(part.encode()) > MAX_PATH_COMPONENT_BYTES:
            raise ValueError(f"{what} has a path component longer than {MAX_PATH_COMPONENT_BYTES} bytes")
    return value


class JobResources(BaseModel):
    """What a job asks for beyond its GPUs; the agent refuses a spec that asks for more than the offer gives.
    Unset fields get the offer's whole allowance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mib: int | None = Field(default=None, ge=16, le=16 * 1024 * 1024)
    cpus: float | None = Field(default=None, gt=0, le=1024)


class JobSpec(BaseModel):
    """A command to run for a rental, in a container of `image`.

    The command (`command + args`, replacing the image's entrypoint; `command` given as a string is split into words
    as a shell splits them, and run without a shell) runs in `working_dir`, a path relative to the
    rental's workspace, which is mounted at `/workspace` and is the only place the job can write to that outlives
    it. `env` is added to the job's environment (reserved names refused); the values of the names in `secret_env`
    come separately, sealed to the agent's key (`offchain.protocol.renterapi.SpecUpload`), so that they never travel
    or rest in the clear. Without `image` the agent uses its provider's default image, and declines when there is none.
    `timeout_seconds` stops the job (reported Failed) once exceeded. `output_dir`, relative to the working
    directory, is what the job leaves for its renter: packed as a tar when the job ends, its keccak256 is the
    completion report's result digest (without it, the digest is keccak256 of the job's stdout). `network` is
    `none` (no network at all, the default) or `egress` (outbound connections), which only an offer that allows
    egress can give. `resources` asks for memory and CPUs within the offer's allowance.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: tuple[str, ...] = Field(min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    secret_env: tuple[str, ...] = ()
    working_dir: str = "."
    image: str | None = Field(default=None, min_length=1)
    timeout_seconds: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_SECONDS)
    output_dir: str = Field(default="out", min_length=1)
    network: Literal["none", "egress"] = "none"
    resources: JobResources = JobResources()

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        # A string is a command line, split as a POSIX shell splits words (no expansion, no shell runs it); the
        # canonical form, and so the hash, has the list.
        if not isinstance(value, str):
            return value
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command line: {exc}") from None
        if not words:
            raise ValueError("the command line is empty")
        return words

    @field_validator("command", "args")
    @classmethod
    def _arguments(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # `args` leaves room for the program, which `command` holds.
        limit = MAX_ARGV_ITEMS if info.field_name == "command" else MAX_ARGV_ITEMS - 1
        if len(value) > limit:
            raise ValueError(f"command and args hold more than {MAX_ARGV_ITEMS} items")
        for argument in value:
            _no_nul(argument, "an argument")
            if len(argument) > MAX_ARG_CHARS:
                raise ValueError(f"an argument is longer than {MAX_ARG_CHARS} characters")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value[0]:
            raise ValueError("the command's program is empty")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ENV_VARS:
            raise ValueError(f"more than {MAX_ENV_VARS} environment variables")
        for name, text in value.items():
            _env_name(name)
            if len(text) > MAX_ENV_VALUE_CHARS:
                raise ValueError(f"environment variable {name} is longer than {MAX_ENV_VALUE_CHARS} characters")
            if any(c in text for c in "\x00\r\n"):
                raise ValueError(
                    f"environment variable {name} holds a line break or NUL byte; put multi-line "
                    "data in a file of the workspace"
                )
        return value

    @field_validator("secret_env")
    @classmethod
    def _secret_env(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_SECRETS:
            raise ValueError(f"more than {MAX_SECRETS} secret environment variables")
        if len(set(value)) != len(value):
            raise ValueError("secret_env names a variable twice")
        for name in value:
            _env_name(name)
        return value

    @model_validator(mode="after")
    def _secrets_apart(self) -> "JobSpec":
        if both := sorted(set(self.env) & set(self.secret_env)):
            raise ValueError(f"{both[0]} is both in env and in secret_env")
        return self

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str) -> str:
        return _relative_path(value, "working_dir")

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, value: str) -> str:
        return _relative_path(value, "output_dir")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > MAX_IMAGE_CHARS or not _IMAGE.match(value)):
            raise ValueError(f"not an image reference (name[:tag][@sha256:digest]): {value[:MAX_IMAGE_CHARS]!r}")
        return value

    @property
    def argv(self) -> list[str]:
        """The command line: `command` followed by `args`."""
        return [*self.command, *self.args]

    def canonical_json(self) -> bytes:
        """The bytes `spec_hash` hashes: `json.dumps(spec, sort_keys=True, separators=(",", ":"))` of every
        field (absent optional fields as `null`, lists for the tuples), ASCII-escaped."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    def spec_hash(self) -> bytes:
        """The `jobSpecHash` a renter puts on chain for this spec."""
        return keccak(self.canonical_json())


def parse_spec(body: bytes, expected_hash: bytes) -> JobSpec:
    """The spec in `body`, checked to hash to `expected_hash`. Raises `JobSpecInvalid` when the body is the
    renter's (its keccak256 is the expected hash) but no valid spec, `JobSpecMissing` when it is someone else's."""
    own_body = keccak(body) == expected_hash
    try:
        spec = JobSpec.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        reason = f"job spec 0x{expected_hash.hex()} is invalid: {where + ': ' if where else ''}{error['msg']}"
        raise (JobSpecInvalid if own_body else JobSpecMissing)(reason) from exc
    if spec.spec_hash() != expected_hash:
        if own_body:
            raise JobSpecInvalid(f"job spec 0x{expected_hash.hex()} is not in canonical form (JobSpec.canonical_json)")
        raise JobSpecMissing(f"job spec body hashes to 0x{spec.spec_hash().hex()}, not 0x{expected_hash.hex()}")
    return spec


class JobSpecStore:
    """Finds job specs by hash in `spec_dir`, then at `spec_url` (a template holding `{hash}`), if given."""

    def __init__(self, spec_dir: Path, spec_url: str | None = None, timeout_seconds: float = 10.0) -> None:
        if spec_url is not None and "{hash}" not in spec_url:
            raise ValueError("the job spec URL must contain {hash}")
        self._dir = spec_dir
        self._url = spec_url
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    def path_of(self, spec_hash: bytes) -> Path:
        """Where the spec of `spec_hash` lives in the spec directory."""
        return self._dir / f"0x{spec_hash.hex()}.json"

    def put(self, spec: JobSpec) -> bytes:
        """Saves `spec` under its hash (atomically) and returns the hash."""
        spec_hash = spec.spec_hash()
        self._save(spec_hash, spec.canonical_json())
        return spec_hash

    async def get(self, spec_hash: bytes) -> JobSpec:
        """The spec whose hash is `spec_hash`; raises `JobSpecMissing` when it cannot be had now and
        `JobSpecInvalid` when the renter's body is no valid spec."""
        path = self.path_of(spec_hash)
        if path.is_file():
            body = path.read_bytes()[: MAX_SPEC_BYTES + 1]
            if len(body) > MAX_SPEC_BYTES:
                raise JobSpecInvalid(f"job spec 0x{spec_hash.hex()} is larger than {MAX_SPEC_BYTES} bytes")
            return parse_spec(body, spec_hash)
        if self._url is None:
            raise JobSpecMissing(f"no job spec 0x{spec_hash.hex()} in {self._dir} and no spec URL configured")
        body = await self._fetch(self._url.replace("{hash}", f"0x{spec_hash.hex()}"))
        spec = parse_spec(body, spec_hash)
        self._save(spec_hash, body)
        return spec

    async def _fetch(self, url: str) -> bytes:
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as session:
                async with session.get(url) as response:
                    if response.status != 200:
                        raise JobSpecMissing(f"GET {url} answered {response.status}")
                    body = await response.content.read(MAX_SPEC_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JobSpecMissing(f"GET {url} failed: {exc!r}") from exc
        if len(body) > MAX_SPEC_BYTES:
            raise JobSpecMissing(f"GET {url}: job spec larger than {MAX_SPEC_BYTES} bytes")
        return body

    def _save(self, spec_hash: bytes, body: bytes) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self.path_of(spec_hash)
        partial = path.with_suffix(".partial")
        partial.write_bytes(body)
        os.replace(partial, path)

"""The job a renter asks the provider to run, its hash, and where the agent finds its body.

A renter puts `jobSpecHash` on chain when opening a rental: keccak256 of the spec's canonical JSON
(`JobSpec.canonical_json`: every field present, keys sorted, no whitespace, ASCII with `\\u` escapes). The body
itself travels off chain. The agent looks for it, in order:

1. in its spec directory, as `<spec_dir>/0x<hash hex>.json` (put there by the provider or a previous fetch);
2. over HTTP, `GET` of the configured URL template with `{hash}` replaced by `0x<hash hex>`; a body fetched
   this way is saved to the spec directory so a restarted agent does not fetch it again.

Either way the body is parsed and hashed again; a body whose hash differs is refused. The body may be any JSON
that parses to the same spec (whitespace and key order do not matter).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath

import aiohttp
from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_SPEC_BYTES = 256 * 1024
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class JobSpecError(Exception):
    """The spec for a hash cannot be had (yet): not found, unreachable, malformed or of another hash."""


def _relative_path(value: str, what: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{what} must be a relative path inside the rental's workspace: {value!r}")
    return value


class JobSpec(BaseModel):
    """A command to run for a rental.

    The process runs `command + args` in `working_dir`, a path relative to the rental's workspace directory
    (in container mode the workspace is mounted at `/workspace`). `env` is added to the job's environment.
    With `image`, the agent runs the command in that container image with its configured container runtime;
    an agent without one refuses such a spec. `timeout_seconds` stops the job (reported Failed) once exceeded.
    `result_file`, relative to the working directory, is the file whose keccak256 is the result digest of the
    completion report; without it the digest is keccak256 of the job's standard output.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: tuple[str, ...] = Field(min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    working_dir: str = "."
    image: str | None = Field(default=None, min_length=1)
    timeout_seconds: int | None = Field(default=None, ge=1)
    result_file: str | None = Field(default=None, min_length=1)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"not an environment variable name: {name!r}")
        return value

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str) -> str:
        return _relative_path(value, "working_dir")

    @field_validator("result_file")
    @classmethod
    def _result_file(cls, value: str | None) -> str | None:
        return None if value is None else _relative_path(value, "result_file")

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
    """The spec in `body`, checked to hash to `expected_hash`."""
    try:
        spec = JobSpec.model_validate_json(body)
    except ValidationError as exc:
        raise JobSpecError(f"job spec 0x{expected_hash.hex()} is malformed: {exc.error_count()} error(s): "
                           f"{exc.errors()[0]['msg']}") from exc
    if spec.spec_hash() != expected_hash:
        raise JobSpecError(f"job spec body hashes to 0x{spec.spec_hash().hex()}, not 0x{expected_hash.hex()}")
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
        """The spec whose hash is `spec_hash`; raises `JobSpecError` when it cannot be had now."""
        path = self.path_of(spec_hash)
        if path.is_file():
            return parse_spec(path.read_bytes(), spec_hash)
        if self._url is None:
            raise JobSpecError(f"no job spec 0x{spec_hash.hex()} in {self._dir} and no spec URL configured")
        body = await self._fetch(self._url.replace("{hash}", f"0x{spec_hash.hex()}"))
        spec = parse_spec(body, spec_hash)
        self._save(spec_hash, body)
        return spec

    async def _fetch(self, url: str) -> bytes:
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as session:
                async with session.get(url) as response:
                    if response.status != 200:
                        raise JobSpecError(f"GET {url} answered {response.status}")
                    body = await response.content.read(MAX_SPEC_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JobSpecError(f"GET {url} failed: {exc!r}") from exc
        if len(body) > MAX_SPEC_BYTES:
            raise JobSpecError(f"GET {url}: job spec larger than {MAX_SPEC_BYTES} bytes")
        return body

    def _save(self, spec_hash: bytes, body: bytes) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self.path_of(spec_hash)
        partial = path.with_suffix(".partial")
        partial.write_bytes(body)
        os.replace(partial, path)

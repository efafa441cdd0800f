"""`gpuex rental send-spec|logs|results|shell`: a renter's access to its job through the renter API of the provider's
agent (`offchain.protocol.renterapi`), and the pieces `gpuex rent` and `gpuex rental status` use.

The agent's URL and key come from the chain (`agentUrlOf`, `agentOf` of the offer's provider); every request is
signed with the renter's key (`GPUEX_KEY` / `GPUEX_KEY_FILE`), and the agent must prove it holds the registered
agent key before the CLI trusts it with a spec or a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import tempfile
import termios
import time
import tty
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiohttp
from pydantic import ValidationError

from offchain.agent.jobspec import JobSpec
from offchain.chain.rpc import ChainUnreachable
from offchain.cli import parse
from offchain.cli.args import ExitStatus, UsageError, add_command, add_job_command, invalid
from offchain.cli.keys import load_account
from offchain.cli.network import Context, open_context
from offchain.cli.output import Output
from offchain.market.exchange import AgentEndpoint, ExchangeError
from offchain.market.offers import OfferRecord
from offchain.market.renterclient import RenterApiError, RenterClient, extract_results
from offchain.protocol.renterapi import JobStatus, LogEnd

#: How long `rent` and `send-spec` keep trying while the agent has not seen the rental yet or cannot be reached.
SPEC_UPLOAD_SECONDS = 90.0
SPEC_RETRY_SECONDS = 1.0


def register(group: argparse._SubParsersAction) -> None:
    send = add_command(
        group,
        "send-spec",
        send_spec_command,
        "upload your rental's job spec (and sealed secret values) to the provider's agent again",
    )
    send.add_argument("rental_id", type=parse.positive_int, metavar="RENTAL")
    add_spec_options(send)
    add_job_command(send)
    logs = add_command(group, "logs", logs_command, "your job's stdout and stderr, from the provider's agent")
    logs.add_argument("rental_id", type=parse.positive_int, metavar="RENTAL")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing as the job writes, until it ends")
    logs.add_argument(
        "--offset",
        type=parse.non_negative_int,
        default=0,
        help="start at this byte offset of the log (from an earlier --json line)",
    )
    results = add_command(
        group, "results", results_command, "download your job's output folder, check its digest, and unpack it"
    )
    results.add_argument("rental_id", type=parse.positive_int, metavar="RENTAL")
    results.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="where to unpack it")
    shell = add_command(group, "shell", shell_command, "an interactive shell in your running job's container")
    shell.add_argument("rental_id", type=parse.positive_int, metavar="RENTAL")
    shell.add_argument("--shell", default="/bin/sh", help="the container's shell (default /bin/sh)")


def add_spec_options(parser: argparse.ArgumentParser) -> None:
    """The job spec's options: a JSON file (`--spec`), or an image and a command given here (`--image IMAGE
    [--env NAME=VALUE ...] -- CMD ARGS...`), each with `--secret-env`. The command's parser then takes
    `add_job_command` last."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", type=Path, metavar="FILE", help="the job spec (JSON)")
    source.add_argument(
        "--image",
        metavar="IMAGE",
        help="run the command given after `--` (the last of the arguments) in this image, with no spec file: "
        "--image busybox -- sh -c 'nvidia-smi -L'",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=_env_assignment,
        metavar="NAME=VALUE",
        help="with --image: set an environment variable of the job (repeat for more)",
    )
    parser.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="NAME",
        help="pass the environment variable NAME of this shell to the job, sealed to the provider's "
        "agent key (repeat for more; it joins the spec's secret_env)",
    )


def _env_assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    return name, value


def spec_options(args: argparse.Namespace) -> str:
    """The spec options as the user gave them, for a command line to repeat."""
    if args.spec is not None:
        return f"--spec {shlex.quote(str(args.spec))}"
    env = "".join(f" --env {shlex.quote(f'{name}={value}')}" for name, value in args.env)
    return f"--image {shlex.quote(args.image)}{env} -- {shlex.join(args.job_command)}"


def load_spec_options(args: argparse.Namespace) -> tuple[JobSpec, dict[str, str]]:
    """The spec that `add_spec_options`' options give, with its secret values from this process's environment."""
    if args.spec is not None:
        if args.job_command or args.env:
            given = "a command after `--`" if args.job_command else "--env"
            raise UsageError(f"{given} goes with --image; a spec file (--spec) holds its own command and env")
        return load_spec(args.spec, args.secret_env)
    if not args.job_command:
        raise UsageError("--image needs the job's command after `--` (e.g. --image busybox -- sh -c 'echo hi')")
    raw = {
        "image": args.image,
        "command": args.job_command,
        "env": dict(args.env),
        "secret_env": list(dict.fromkeys(args.secret_env)),
    }
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise invalid(exc, "job") from None
    return spec, _secret_values(spec)


def load_spec(path: Path, secret_env: list[str]) -> tuple[JobSpec, dict[str, str]]:
    """The spec of `path` with `secret_env` names added, and their values from this process's environment."""
    try:
        raw = json.loads(path.read_bytes())
        if not isinstance(raw, dict):
            raise UsageError(f"--spec {path}: a job spec is a JSON object")
        if "command" not in raw:
            raise UsageError(
                f"bad job spec {path}: command: missing (the program and its arguments: a list, or one string split "
                "like a shell)"
            )
        if secret_env:
            names = list(dict.fromkeys([*raw.get("secret_env", []), *secret_env]))
            raw = {**raw, "secret_env": names}
        spec = JobSpec.model_validate(raw)
    except OSError as exc:
        raise UsageError(f"--spec {path}: {exc.strerror}") from None
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise invalid(exc, f"job spec {path}") from None
        raise UsageError(f"--spec {path}: not JSON: {exc}") from None
    return spec, _secret_values(spec)


def _secret_values(spec: JobSpec) -> dict[str, str]:
    missing = [name for name in spec.secret_env if name not in os.environ]
    if missing:
        raise UsageError(f"the secret environment variable {missing[0]} is not set in this shell")
    return {name: os.environ[name] for name in spec.secret_env}


@asynccontextmanager
async def renter_client(ctx: Context, rental_id: int, offer: OfferRecord | None = None) -> AsyncIterator[RenterClient]:
    """A client of the renter API of the rental's provider, signing with this command's key; `offer` is the
    rental's offer where the caller read it already."""
    endpoint = (
        AgentEndpoint.of(offer) if offer is not None else await ctx.client.agent_endpoint_of_offer(rental_id >> 32)
    )
    account = load_account(ctx.profile)
    async with RenterClient(
        endpoint.url, ctx.deployment.chain_id, ctx.deployment.escrow, account.key, agent=endpoint.agent
    ) as client:
        yield client


async def send_spec(
    ctx: Context,
    rental_id: int,
    spec: JobSpec,
    secrets: dict[str, str],
    offer: OfferRecord | None = None,
    patience_seconds: float = SPEC_UPLOAD_SECONDS,
) -> str:
    """Uploads the rental's spec to the provider's agent, trying again while the agent has not seen the rental or
    cannot be reached; returns the agent's URL."""
    async with renter_client(ctx, rental_id, offer) as client:
        deadline = time.monotonic() + patience_seconds
        while True:
            try:
                await client.upload_spec(rental_id, spec, secrets)
                return client.base_url
            except RenterApiError as exc:
                retry = exc.status == 0 or exc.code == "unknown_rental"
                if not retry or time.monotonic() > deadline:
                    raise ExchangeError(
                        f"the provider's agent at {client.base_url} did not take the spec: {exc}"
                    ) from None
                await asyncio.sleep(SPEC_RETRY_SECONDS)


async def job_status(
    ctx: Context, rental_id: int, offer: OfferRecord | None = None
) -> tuple[JobStatus | None, str | None]:
    """The job's status from the provider's agent, which tells it only to the renter (this command's key) and only
    where the provider publishes an agent URL; otherwise None and why not, in words (the chain's view stands alone)."""
    try:
        load_account(ctx.profile)
    except UsageError:
        return None, "the provider's agent tells the job's status to its renter only: set GPUEX_KEY_FILE to its key"
    try:
        async with renter_client(ctx, rental_id, offer) as client:
            return await asyncio.wait_for(client.status(rental_id), 10), None
    except ExchangeError as exc:
        return None, str(exc)
    except RenterApiError as exc:
        return None, f"the provider's agent answered: {exc}"
    except (asyncio.TimeoutError, aiohttp.ClientError, ChainUnreachable) as exc:
        return None, f"the provider's agent did not answer ({type(exc).__name__})"


async def send_spec_command(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    spec, secrets = load_spec_options(args)
    async with open_context(args, key=True) as ctx:
        rental = await ctx.client.rental(args.rental_id)
        if bytes.fromhex(rental.job_spec_hash.removeprefix("0x")) != spec.spec_hash():
            raise UsageError(
                f"{spec_options(args)} hashes to 0x{spec.spec_hash().hex()}, not the rental's {rental.job_spec_hash}"
            )
        url = await send_spec(ctx, args.rental_id, spec, secrets)
    out.emit(
        {"rental_id": args.rental_id, "agent": url, "secrets": sorted(secrets)},
        lambda: out.print(
            f"job spec of rental {args.rental_id} sent to {url}"
            + (f" with {len(secrets)} sealed secret value(s)" if secrets else "")
        ),
    )
    return ExitStatus.OK


async def logs_command(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx, renter_client(ctx, args.rental_id) as client:
        async for item in client.logs(args.rental_id, offset=args.offset, follow=args.follow):
            if out.json:
                out.json_line(item)
            elif isinstance(item, LogEnd):
                ended = "exited with 0" if item.exit_code == 0 else (item.reason or f"exited with {item.exit_code}")
                print(f"-- the job ended: {ended} (log offset {item.offset})", file=sys.stderr)
            else:
                stream = sys.stdout if item.stream == "stdout" else sys.stderr
                stream.write(item.data)
                stream.flush()
    return ExitStatus.OK


async def results_command(args: argparse.Namespace) -> ExitStatus:
    out = Output(args)
    async with open_context(args, key=True) as ctx, renter_client(ctx, args.rental_id) as client:
        status = await client.status(args.rental_id)
        args.output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=args.output) as scratch:
            tar_path = Path(scratch) / "results.tar"
            digest = await client.download_results(args.rental_id, tar_path)
            if status.result_digest is not None and bytes.fromhex(status.result_digest[2:]) != digest:
                raise ExchangeError("the results are not the ones the agent reported for the job")
            size = tar_path.stat().st_size
            skipped = await asyncio.to_thread(extract_results, tar_path, args.output)
    result = {
        "rental_id": args.rental_id,
        "digest": "0x" + digest.hex(),
        "bytes": size,
        "directory": str(args.output),
        "skipped": skipped,
    }

    def human() -> None:
        out.print(
            f"results of rental {args.rental_id}: {size:,} bytes, digest 0x{digest.hex()} (as the agent "
            f"reported it), unpacked into {args.output}"
        )
        for entry in skipped:
            out.print(f"  skipped {entry}")

    out.emit(result, human)
    return ExitStatus.OK


async def shell_command(args: argparse.Namespace) -> ExitStatus:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("`gpuex rental shell` needs a terminal")
    async with open_context(args, key=True) as ctx, renter_client(ctx, args.rental_id) as client:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
        ws = await client.shell(args.rental_id, rows, cols, args.shell)
        try:
            return await _interact(ws)
        finally:
            await ws.close()


async def _interact(ws: aiohttp.ClientWebSocketResponse) -> ExitStatus:
    """Relays this terminal (raw) and the remote shell until the remote side closes."""
    loop = asyncio.get_running_loop()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = termios.tcgetattr(stdin)
    keys: asyncio.Queue[bytes] = asyncio.Queue()

    def typed() -> None:
        keys.put_nowait(os.read(stdin, 4096))

    def resized() -> None:
        cols, rows = os.get_terminal_size(stdout)
        asyncio.ensure_future(ws.send_str(json.dumps({"resize": [rows, cols]})))

    async def send_keys() -> None:
        while data := await keys.get():
            await ws.send_bytes(data)

    tty.setraw(stdin)
    loop.add_reader(stdin, typed)
    loop.add_signal_handler(signal.SIGWINCH, resized)
    sender = asyncio.ensure_future(send_keys())
    closed_because = ""
    try:
        while True:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                os.write(stdout, message.data)
            elif message.type == aiohttp.WSMsgType.CLOSE:
                closed_because = message.extra or ""
                break
            elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                break
    finally:
        sender.cancel()
        loop.remove_reader(stdin)
        loop.remove_signal_handler(signal.SIGWINCH)
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    if ws.close_code not in (None, 1000):
        print(f"\r\nthe shell closed: {closed_because or f'code {ws.close_code}'}", file=sys.stderr)
        return ExitStatus.FAILED
    return ExitStatus.OK

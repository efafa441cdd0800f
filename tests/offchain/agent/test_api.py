"""The agent's renter API over real HTTP: who may do what (every refusal class, and that a refusal changes nothing),
the spec uploaded privately with a sealed secret, logs followed and resumed from an offset, results whose digest is
the completion report's, a shell in the running container, and all of it again after a kill -9 of the agent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import socket
import time

import aiohttp
import pytest
from eth_account import Account
from eth_utils import keccak

from offchain.agent.jobspec import JobSpec, JobSpecStore
from offchain.agent.rentals import Phase
from offchain.market.renterclient import RenterApiError, RenterClient, extract_results
from offchain.protocol.renterapi import Action, LogEnd, LogEntry, seal, sign_request
from tests.offchain.agent.harness import (
    agent_process,
    agent_with_oracles,
    final_report,
    job,
    rental_done,
    start_oracles,
)
from tests.offchain.agent.helpers import wait_until
from tests.offchain.conftest import AGENT_KEY, PRICE

RENTER_KEY = "0x" + keccak(text="gpuex renter api: renter").hex()
STRANGER_KEY = "0x" + keccak(text="gpuex renter api: stranger").hex()
SECRET = "hf_s3cr3t-Value=with spaces"
DURATION = 600
# Prints numbered lines, leaves its output folder, then runs until a shell touches /workspace/stop.
LINES = 12
INTERACTIVE = job(
    f"i=0; while [ $i -lt {LINES} ]; do echo line $i; i=$((i+1)); sleep 0.1; done; "
    "mkdir -p out; printf %s \"$HF_TOKEN\" | sha256sum | cut -d' ' -f1 > out/token.sha256; "
    "head -c 300000 /dev/zero > out/weights.bin; echo to stderr >&2; "
    "while [ ! -e /workspace/stop ]; do sleep 0.1; done; echo stopped",
    secret_env=("HF_TOKEN",),
)


@pytest.fixture(scope="module")
def renters(suite, token, deployer, offer, accounts):
    """Two funded renters whose keys the tests hold (to sign renter API requests): the renter and a stranger."""
    keyed = []
    for key in (RENTER_KEY, STRANGER_KEY):
        account = accounts.add(key)
        deployer.transfer(account, "10 ether")
        token.mint(account, 1_000_000 * 10**6, {"from": deployer})
        token.approve(suite.escrow, 2**256 - 1, {"from": account})
        keyed.append(account)
    return keyed


def client_for(settings, port: int, key: str) -> RenterClient:
    return RenterClient(
        f"http://127.0.0.1:{port}",
        settings.chain.chain_id,
        settings.chain.escrow,
        key,
        agent=Account.from_key(AGENT_KEY).address,
    )


async def open_rental(suite, renter, offer_id: int, spec: JobSpec) -> int:
    tx = await asyncio.to_thread(suite.escrow.openRental, offer_id, DURATION, PRICE, spec.spec_hash(), {"from": renter})
    return tx.return_value


async def shell_says(client: RenterClient, rental_id: int, command: str, expect: bytes, seconds: float = 20) -> bytes:
    """Opens a shell, types `command`, and returns what the terminal showed once `expect` appeared."""
    ws = await client.shell(rental_id, rows=24, cols=80)
    seen = b""
    try:
        await ws.send_bytes(command.encode())
        deadline = time.monotonic() + seconds
        while expect not in seen:
            message = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.monotonic()))
            if message.type != aiohttp.WSMsgType.BINARY:
                raise AssertionError(f"the shell closed before {expect!r}: {message} after {seen!r}")
            seen += message.data
    finally:
        await ws.close()
    return seen


async def logs_of(
    client: RenterClient, rental_id: int, offset: int = 0, follow: bool = False
) -> tuple[list[LogEntry], LogEnd | None]:
    entries, end = [], None
    async for item in client.logs(rental_id, offset=offset, follow=follow):
        if isinstance(item, LogEnd):
            end = item
        else:
            entries.append(item)
    return entries, end


def stdout_lines(entries: list[LogEntry]) -> list[str]:
    return "".join(e.data for e in entries if e.stream == "stdout").splitlines()


# ------------------------------------------------------------------ who may do what


def test_every_bad_request_is_refused_with_a_reason_and_changes_nothing(suite, renters, gpu_offer, agent_settings):
    renter, stranger = renters
    listed = gpu_offer()
    settings = agent_settings([], spec_wait_seconds=120)
    spec = job("echo fine", secret_env=("HF_TOKEN",))
    other_spec = job("echo not the rental's")
    chain = settings.chain

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            await until(lambda: agent.book.get(rental) is not None, 20, "the agent to see the rental")
            url = f"http://127.0.0.1:{agent.api.port}/v1/rentals/{rental}"
            public_key = agent.api.info.public_key

            def body_of(s: JobSpec, secrets: dict[str, str] | None = None) -> bytes:
                sealed = {name: seal(public_key, value) for name, value in (secrets or {}).items()}
                return json.dumps({"spec": json.loads(s.canonical_json()), "secrets": sealed}).encode()

            good = body_of(spec, {"HF_TOKEN": SECRET})

            def signed(
                key: str, action: Action = Action.SPEC, body: bytes = good, rental_id: int = rental, **kwargs
            ) -> dict[str, str]:
                return sign_request(key, chain.chain_id, chain.escrow, rental_id, action, body, **kwargs)

            async with aiohttp.ClientSession() as http:

                async def put(headers: dict[str, str], body: bytes = good, where: str = url) -> tuple[int, dict]:
                    async with http.put(f"{where}/spec", data=body, headers=headers) as response:
                        origins.add(response.headers.get("Access-Control-Allow-Origin"))
                        return response.status, await response.json()

                origins: set[str | None] = set()
                preflight_headers = {
                    "Origin": "http://page.example",
                    "Access-Control-Request-Method": "PUT",
                    "Access-Control-Request-Headers": "content-type,gpuex-expiry,gpuex-nonce,gpuex-signature",
                }
                async with http.options(f"{url}/spec", headers=preflight_headers) as response:
                    preflight = response.status, dict(response.headers)

                answers = {
                    "unsigned": await put({}),
                    "expired": await put(signed(RENTER_KEY, now=time.time() - 600)),
                    "too far ahead": await put(signed(RENTER_KEY, validity_seconds=3_600)),
                    "garbage signature": await put({**signed(RENTER_KEY), "Gpuex-Signature": "0x" + "00" * 65}),
                    "other renter": await put(signed(STRANGER_KEY)),
                    "signed for another rental": await put(signed(RENTER_KEY, rental_id=rental + 1)),
                    "signed for another action": await put(signed(RENTER_KEY, action=Action.LOGS)),
                    "body changed after signing": await put(signed(RENTER_KEY), body=body_of(spec, {"HF_TOKEN": "x"})),
                    "unknown rental": await put(
                        signed(RENTER_KEY, rental_id=7_777), where=url.rsplit("/", 1)[0] + "/7777"
                    ),
                    "spec of another hash": await put(
                        signed(RENTER_KEY, body=body_of(other_spec)), body=body_of(other_spec)
                    ),
                    "secret missing": await put(signed(RENTER_KEY, body=body_of(spec)), body=body_of(spec)),
                    "secret not sealed to the agent": await put(
                        signed(RENTER_KEY, body=(b := good.replace(b'"0x', b'"0x00', 1))), body=b
                    ),
                    "not json": await put(signed(RENTER_KEY, body=b"{"), body=b"{"),
                }
                replay = signed(RENTER_KEY, action=Action.STATUS, body=b"")
                async with http.get(f"{url}/status", headers=replay) as first:
                    first_status = first.status
                async with http.get(f"{url}/status", headers=replay) as again:
                    answers["replayed"] = (again.status, await again.json())
                stored_before = JobSpecStore(settings.spec_directory).path_of(spec.spec_hash()).exists()
                secrets_before = agent.jobs.files_of(rental).secrets.exists()
                phase_before = agent.book.get(rental).phase
                accepted = await put(signed(RENTER_KEY))
            await until(lambda: final_report(oracles[0], rental) is not None, 30, "the job, once the spec came")
        return answers, first_status, stored_before, secrets_before, phase_before, accepted, origins, preflight

    answers, first_status, stored_before, secrets_before, phase_before, accepted, origins, preflight = asyncio.run(
        main()
    )

    expected = {
        "unsigned": (401, "unsigned"),
        "expired": (401, "expired"),
        "too far ahead": (401, "expired"),
        "garbage signature": (401, "bad_signature"),
        "other renter": (403, "not_renter"),
        "signed for another rental": (403, "not_renter"),
        "signed for another action": (403, "not_renter"),
        "body changed after signing": (403, "not_renter"),
        "unknown rental": (404, "unknown_rental"),
        "spec of another hash": (422, "spec_hash_mismatch"),
        "secret missing": (422, "secrets_mismatch"),
        "secret not sealed to the agent": (422, "secrets_mismatch"),
        "not json": (422, "invalid_body"),
        "replayed": (401, "replayed"),
    }
    assert {what: (status, body["error"]) for what, (status, body) in answers.items()} == expected
    assert all(body["detail"] for _, body in answers.values()), "every refusal says why"
    assert first_status == 200
    assert (stored_before, secrets_before, phase_before) == (False, False, Phase.OPENED), "refusals changed nothing"
    assert accepted[0] == 200
    # A page of another origin may make these requests (they are signed, and no cookie is read): every answer,
    # refusals included, allows any origin, and a preflight allows the signature headers.
    assert origins == {"*"}
    status, headers = preflight
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "gpuex-expiry", "gpuex-nonce", "gpuex-signature"} <= allowed
    assert "PUT" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Expose-Headers"] == "Gpuex-Result-Digest"


# ------------------------------------------------------------------ the renter's side, whole


def test_the_renter_uploads_a_spec_with_a_secret_then_reads_logs_results_and_a_shell(
    suite, renters, gpu_offer, agent_settings, caplog, tmp_path
):
    caplog.set_level("DEBUG")
    renter, stranger = renters
    listed = gpu_offer()
    settings = agent_settings([], spec_wait_seconds=120)

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            port = agent.api.port
            rental = await open_rental(suite, renter, listed.offer_id, INTERACTIVE)
            await until(lambda: agent.book.get(rental) is not None, 20, "the agent to see the rental")
            async with (
                client_for(settings, port, RENTER_KEY) as client,
                client_for(settings, port, STRANGER_KEY) as intruder,
            ):
                await client.upload_spec(rental, INTERACTIVE, {"HF_TOKEN": SECRET})
                following = asyncio.create_task(logs_of(client, rental, follow=True))
                await until(lambda: agent.book.get(rental).container is not None, 30, "the container")
                first, _ = await asyncio.wait_for(logs_of(client, rental), 10)
                while len(stdout_lines(first)) < LINES:
                    await asyncio.sleep(0.1)
                    first, _ = await logs_of(client, rental)
                refused = {}
                for what, call in (
                    ("status", intruder.status(rental)),
                    ("logs", logs_of(intruder, rental)),
                    ("results", intruder.download_results(rental, tmp_path / "stolen.tar")),
                    ("shell", intruder.shell(rental, 24, 80)),
                ):
                    try:
                        await call
                    except RenterApiError as exc:
                        refused[what] = exc.status
                running = await client.status(rental)
                seen = await shell_says(client, rental, "echo $((6*7)) $(id -u); touch /workspace/stop\n", b"42 65534")
                entries, end = await asyncio.wait_for(following, 30)
                resumed, resumed_end = await logs_of(client, rental, offset=entries[LINES // 2].offset)
                await until(lambda: final_report(oracles[0], rental) is not None, 30, "the completion report")
                digest = await client.download_results(rental, tmp_path / "results.tar")
                done = await client.status(rental)
        return rental, oracles[0], entries, end, resumed, resumed_end, refused, running, seen, digest, done

    rental, oracle, entries, end, resumed, resumed_end, refused, running, seen, digest, done = asyncio.run(main())

    assert stdout_lines(entries) == [f"line {i}" for i in range(LINES)] + ["stopped"]
    assert [e.data for e in entries if e.stream == "stderr"] == ["to stderr\n"]
    assert (end.exit_code, end.reason) == (0, None)
    assert stdout_lines(resumed) == [f"line {i}" for i in range(LINES // 2 + 1, LINES)] + ["stopped"]
    assert resumed_end.offset == end.offset
    assert refused == {"status": 403, "logs": 403, "results": 403, "shell": 403}
    assert (running.container.state, running.image, running.spec_received) == (
        "running",
        "localhost/gpuex/job:busybox",
        True,
    )
    assert running.isolation == "container" and len(running.gpus) == 2
    assert b"42 65534" in seen
    report = final_report(oracle, rental)
    assert digest == report.result_digest == bytes.fromhex(done.result_digest[2:])
    assert (done.exit_code, done.results_available) == (0, True) and done.container.state in ("exited", "gone")
    skipped = extract_results(tmp_path / "results.tar", tmp_path / "results")
    assert skipped == []
    assert (tmp_path / "results" / "token.sha256").read_text().strip() == hashlib.sha256(SECRET.encode()).hexdigest()
    assert (tmp_path / "results" / "weights.bin").stat().st_size == 300_000

    # The secret was sealed on its way and at rest; its value is nowhere on the agent's disk or in its logs.
    needle = SECRET.encode()
    for path in settings.state_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"the secret is in {path}"
    assert not any(SECRET in record.getMessage() for record in caplog.records)
    assert not (settings.rentals_dir / str(rental) / "secrets.json").exists(), "sealed values go with the rental"


def test_a_spec_that_asks_for_secrets_waits_for_them_and_is_declined_without(suite, renters, gpu_offer, agent_settings):
    """The spec body alone (from the spec folder) is not enough: without its sealed values the job cannot start,
    and the rental is declined at the end of the spec wait."""
    renter, _ = renters
    listed = gpu_offer()
    settings = agent_settings([], spec_wait_seconds=2)
    spec = job("echo $HF_TOKEN", secret_env=("HF_TOKEN",))
    JobSpecStore(settings.spec_directory).put(spec)

    async def main():
        async with agent_with_oracles(settings, listed.source) as (agent, oracles, until):
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            await until(lambda: rental_done(agent, rental), 30, "the decline")
            return agent.book.get(rental)

    record = asyncio.run(main())

    assert record.outcome.startswith("declined (SPEC_MISSING)") and "secret" in record.outcome


# ------------------------------------------------------------------ kill -9


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_after_a_kill_9_logs_are_whole_results_match_and_a_new_shell_works(
    suite, renters, gpu_offer, agent_settings, tmp_path
):
    renter, _ = renters
    listed = gpu_offer()
    settings = agent_settings([], spec_wait_seconds=120)
    key_file = tmp_path / "agent.key"
    key_file.write_text(AGENT_KEY.hex())
    port = free_port()
    lines = 40
    spec = job(
        f"i=0; while [ $i -lt {lines} ]; do echo line $i; i=$((i+1)); sleep 0.1; done; "
        "mkdir -p out; echo result > out/answer.txt; "
        "while [ ! -e /workspace/stop ]; do sleep 0.1; done"
    )

    async def main():
        oracles = await start_oracles(settings, count=1)
        argv, env = agent_process(settings, key_file, oracles, listed.seed, api_port=str(port))
        log_file = (tmp_path / "agent.log").open("ab")
        spawn = lambda: asyncio.create_subprocess_exec(*argv, env=env, stdout=log_file, stderr=log_file)  # noqa: E731
        agent = await spawn()
        try:
            rental = await open_rental(suite, renter, listed.offer_id, spec)
            async with client_for(settings, port, RENTER_KEY) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        await client.upload_spec(rental, spec)
                        break
                    except RenterApiError:
                        assert time.monotonic() < deadline, "the agent never took the spec"
                        await asyncio.sleep(0.3)
                while len(stdout_lines((await logs_of(client, rental))[0])) < 10:
                    await asyncio.sleep(0.1)
                agent.send_signal(signal.SIGKILL)
                await agent.wait()
                agent = await spawn()
                await asyncio.sleep(1.5)  # let the job write on while the agent is down and restarting
                deadline = time.monotonic() + 30
                while True:
                    try:
                        seen = await shell_says(client, rental, "touch /workspace/stop; echo $((7*6))\n", b"42")
                        break
                    except (RenterApiError, AssertionError):
                        assert time.monotonic() < deadline, "no shell after the restart"
                        await asyncio.sleep(0.3)
                await wait_until(lambda: final_report(oracles[0], rental) is not None, 30, "the completion report")
                entries, end = await logs_of(client, rental, follow=True)
                digest = await client.download_results(rental, tmp_path / "results.tar")
        finally:
            if agent.returncode is None:
                agent.send_signal(signal.SIGTERM)
                await asyncio.wait_for(agent.wait(), 20)
            await oracles[0].stop()
            log_file.close()
        return rental, oracles[0], entries, end, seen, digest

    rental, oracle, entries, end, seen, digest = asyncio.run(main())

    assert stdout_lines(entries) == [f"line {i}" for i in range(lines)], "every line, once, in order"
    assert end.exit_code == 0 and b"42" in seen
    assert digest == final_report(oracle, rental).result_digest
    assert "re-attached" in (tmp_path / "agent.log").read_text()

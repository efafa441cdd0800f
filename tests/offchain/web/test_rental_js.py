"""The rental page's bundled modules, run by node on their own: the renter API requests the page signs with the
wallet recover, by the agent's own check, to the renter and to nothing else; the telemetry points it keeps and the
chart columns it draws from them."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from eth_account import Account
from eth_utils import keccak

from offchain.chain.contracts import PROJECT_ROOT
from offchain.protocol.renterapi import Action, RequestRefused, body_hash, recover_signer

RENTER_KEY = "0x" + keccak(text="gpuex web page: renter").hex()
CHAIN_ID = 31_337
ESCROW = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
#: A rental id beyond a JavaScript number's exact range: the page must carry it as a string, signed as a uint256.
RENTAL_ID = 2**128 + 12_345


def run_node(script: str) -> object:
    """Runs an ES module script in the repository (so that `./offchain/web/src/...` and npm packages resolve) and
    returns the JSON it prints."""
    node = shutil.which("node")
    if node is None or not (PROJECT_ROOT / "node_modules" / "viem").is_dir():
        pytest.fail("node and the npm packages are needed: run `make setup`")
    done = subprocess.run(
        [node, "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON", "--input-type=module", "-e", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def test_a_request_the_page_signs_recovers_to_the_renter_for_its_rental_and_action_only() -> None:
    """The typed data the page asks the wallet to sign (`renterRequest`), signed here by a local key as a wallet
    would, passes the agent's check; the browser test signs the same through the test wallet."""
    signed = run_node(f"""
        import {{ renterRequest }} from "./offchain/web/src/renterapi.js";
        import {{ bytesToHex }} from "viem";
        import {{ privateKeyToAccount }} from "viem/accounts";
        const account = privateKeyToAccount("{RENTER_KEY}");
        const request = {{ chainId: {CHAIN_ID}, escrow: "{ESCROW}", rentalId: "{RENTAL_ID}" }};
        const out = {{}};
        for (const action of ["status", "logs"]) {{
          const expiry = Math.floor(Date.now() / 1000) + 60;
          const nonce = bytesToHex(crypto.getRandomValues(new Uint8Array(32)));
          const signature = await account.signTypedData(renterRequest({{ ...request, action, expiry, nonce }}));
          out[action] = {{ "Gpuex-Expiry": String(expiry), "Gpuex-Nonce": nonce, "Gpuex-Signature": signature }};
        }}
        out.spec = renterRequest({{ ...request, action: "spec", expiry: 1, nonce: "0x" + "00".repeat(32),
                                   body: '{{"spec":{{}}}}' }}).message.bodyHash;
        console.log(JSON.stringify(out));
    """)
    assert isinstance(signed, dict)
    renter = Account.from_key(RENTER_KEY).address
    status, logs = signed["status"], signed["logs"]

    signer, nonce, _ = recover_signer(status, CHAIN_ID, ESCROW, RENTAL_ID, Action.STATUS)
    assert signer == renter
    assert recover_signer(logs, CHAIN_ID, ESCROW, RENTAL_ID, Action.LOGS)[0] == renter
    assert nonce != bytes.fromhex(logs["Gpuex-Nonce"][2:]), "each request has a nonce of its own"
    # Anything the agent checks otherwise recovers someone else, who is not the renter.
    assert recover_signer(status, CHAIN_ID, ESCROW, RENTAL_ID, Action.LOGS)[0] != renter
    assert recover_signer(status, CHAIN_ID, ESCROW, RENTAL_ID + 1, Action.STATUS)[0] != renter
    assert recover_signer(status, CHAIN_ID + 1, ESCROW, RENTAL_ID, Action.STATUS)[0] != renter
    assert recover_signer(status, CHAIN_ID, ESCROW, RENTAL_ID, Action.STATUS, body=b"{}")[0] != renter
    assert signed["spec"] == "0x" + body_hash(b'{"spec":{}}').hex(), "a body is signed as the agent hashes it"
    with pytest.raises(RequestRefused, match="expired"):
        recover_signer(status, CHAIN_ID, ESCROW, RENTAL_ID, Action.STATUS, now=int(status["Gpuex-Expiry"]) + 1)


def _point(seq: int, gpus: list[tuple[str, float | None]]) -> dict:
    return {
        "seq": seq,
        "period_start": 1_000 + seq - 1,
        "covered_until": 1_000 + seq,
        "gpus": [
            {
                "uuid": uuid,
                "util_pct": util,
                "mem_used_mib": 1_024 * seq,
                "mem_total_mib": 81_559,
                "power_w": None if util is None else 300.5,
                "temp_c": 60,
                "samples": 10,
            }
            for uuid, util in gpus
        ],
    }


def test_telemetry_points_merge_by_seq_and_chart_as_one_column_per_gpu_with_gaps() -> None:
    held = [_point(1, [("GPU-a", 50.0), ("GPU-b", 40.0)]), _point(2, [("GPU-a", 55.0), ("GPU-b", None)])]
    fresh = [_point(4, [("GPU-b", 90.0)]), _point(2, [("GPU-a", 56.0), ("GPU-b", 41.0)]), _point(3, [("GPU-a", 60.0)])]
    result = run_node(f"""
        import {{ mergePoints, telemetryColumns, usageColumns }} from "./offchain/web/src/telemetry.js";
        const held = {json.dumps(held)};
        const merged = mergePoints(held, {json.dumps(fresh)});
        const rental = {{ since: 990, reports: [
            {{ covered_until: 1000, utilisation: 0.805, total_delivered_seconds: 9 }},
            {{ covered_until: 1010, utilisation: null, total_delivered_seconds: 9 }} ] }};
        console.log(JSON.stringify({{
          merged: merged.map((p) => p.seq),
          limited: mergePoints(held, {json.dumps(fresh)}, 2).map((p) => p.seq),
          columns: telemetryColumns(merged),
          none: telemetryColumns([]),
          usage: usageColumns(rental),
        }}));
    """)
    assert isinstance(result, dict)
    assert result["merged"] == [1, 2, 3, 4]
    assert result["limited"] == [3, 4], "the oldest points drop off"
    columns = result["columns"]
    assert columns["x"] == [1_001, 1_002, 1_003, 1_004]
    assert columns["gpus"] == ["GPU-a", "GPU-b"]
    assert columns["series"]["util_pct"] == [[50.0, 56.0, 60.0, None], [40.0, 41.0, None, 90.0]], "a later answer wins"
    assert columns["series"]["power_w"][0] == [300.5, 300.5, 300.5, None]
    assert columns["series"]["mem_used_mib"][1] == [1_024, 2_048, None, 4_096]
    assert columns["series"]["temp_c"] == [[60, 60, 60, None], [60, 60, None, 60]]
    assert result["none"] == {
        "x": [],
        "gpus": [],
        "series": {"util_pct": [], "mem_used_mib": [], "power_w": [], "temp_c": []},
    }
    assert result["usage"] == {"x": [1_000, 1_010], "util": [80.5, None], "delivered": [9, 9], "elapsed": [10, 20]}

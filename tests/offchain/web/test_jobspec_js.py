"""The page computes a job spec's hash in the browser (offchain/web/src/jobspec.js) before it asks the wallet to
open the rental: for the same spec it must be the hash the agent computes (`JobSpec.spec_hash`), or the agent would
refuse the uploaded spec. The page's splitting of a command line is Python's `shlex.split`, as the CLI's."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest

from offchain.agent.jobspec import JobSpec
from offchain.chain.contracts import PROJECT_ROOT

JOBSPEC_JS = PROJECT_ROOT / "offchain" / "web" / "src" / "jobspec.js"
#: (command, image, timeout) as the rent form takes them.
SPECS = [
    (["sleep", "600"], None, None),
    (["python", "train.py", "--epochs", "3"], "ghcr.io/acme/train:1.2@sha256:" + "ab" * 32, 3_600),
    (["sh", "-c", "echo 'héllo ☃ 😀' \u007f\t\"quoted\" \\\\ done\n"], "busybox", None),
    (["printf", "%s\u0001\u001f", "</script>"], "localhost:5000/x/y:latest", 1),
]
COMMAND_LINES = [
    "sleep 600",
    "  python   train.py --lr=0.1  ",
    "sh -c 'echo hello; sleep 600'",
    'echo "a \\"quoted\\" word" \\$HOME it\\\'s',
    "a''b \"\"  'x y'\"z\"",
    'echo "\\n stays" \\\\',
]
SCRIPT = """
const [specs, lines] = JSON.parse(process.argv[1]);
const { buildSpec, canonicalJson, specHash, splitCommand } = await import(process.argv[2]);
const built = specs.map(([command, image, timeoutSeconds]) => buildSpec({ command, image, timeoutSeconds }));
console.log(JSON.stringify({
  canonical: built.map(canonicalJson), hashes: built.map(specHash), words: lines.map(splitCommand),
}));
"""


def _run_js() -> dict:
    node = shutil.which("node")
    if node is None or not (PROJECT_ROOT / "node_modules" / "viem").is_dir():
        pytest.fail("node and the npm packages are needed: run `make setup`")
    result = subprocess.run(
        [
            node,
            "--no-warnings",
            "--input-type=module",
            "-e",
            SCRIPT,
            json.dumps([SPECS, COMMAND_LINES]),
            str(JOBSPEC_JS),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    return json.loads(result.stdout)


def test_the_page_hashes_a_spec_as_the_agent_does() -> None:
    js = _run_js()
    specs = [JobSpec(command=tuple(command), image=image, timeout_seconds=timeout) for command, image, timeout in SPECS]
    assert js["canonical"] == [spec.canonical_json().decode() for spec in specs]
    assert js["hashes"] == ["0x" + spec.spec_hash().hex() for spec in specs]


def test_the_page_splits_a_command_line_as_a_shell_does() -> None:
    assert _run_js()["words"] == [shlex.split(line) for line in COMMAND_LINES]

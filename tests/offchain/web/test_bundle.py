"""The committed bundle of the page's JavaScript is exactly what the sources and the locked npm libraries build."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from offchain.chain.contracts import PROJECT_ROOT

WEB = PROJECT_ROOT / "offchain" / "web"
DIST = WEB / "static" / "dist"


def test_the_committed_bundle_is_the_build_of_the_sources(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (PROJECT_ROOT / "node_modules" / "esbuild").is_dir():
        pytest.fail("node and the npm packages are needed to build the page: run `make setup`")
    subprocess.run([node, str(WEB / "build.mjs"), "--outdir", str(tmp_path)], check=True, cwd=PROJECT_ROOT)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(DIST) for p in DIST.rglob("*") if p.is_file())
    assert built == committed, "run `npm run build:web` and commit offchain/web/static/dist/"
    for name in built:
        assert (tmp_path / name).read_bytes() == (DIST / name).read_bytes(), f"{name} is stale: run `npm run build:web`"

"""The folders of `offchain/` are layers: each imports only from the layers below it (README's map lists them in
this order), so that the chain and protocol layers never depend on what is built on them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from offchain.chain.contracts import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "offchain"
#: Bottom first. `config`, `sqlite` and `http` (modules, not layers) may be imported from anywhere.
LAYERS = ("protocol", "chain", "telemetry", "agent", "market", "web", "oracle", "ops", "cli")
SHARED = {"config", "sqlite", "http"}


def _imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "offchain" and len(parts) > 1:
                layers.add(parts[1])
    return layers - SHARED


def test_every_folder_of_the_package_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_from_the_layers_below_it(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    upward = {
        f"{path.relative_to(PACKAGE)} imports offchain.{imported}"
        for path in (PACKAGE / layer).rglob("*.py")
        for imported in _imported_layers(path) - allowed
    }
    assert not upward

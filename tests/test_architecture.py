"""The rooms keep their shape (docs/ARCHITECTURE.md): which way imports run, and server
modules small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_SERVER_MODULE_LINES = 400


def _imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, anywhere in it (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("room", "forbidden"),
    [
        # Pure Python: no torch, no grpc, nothing of Tandem's other rooms.
        ("scheduler", {"engines", "server", "tandem", "torch", "torchvision", "grpc"}),
        # torch, no grpc; never the scheduler or the server.
        ("engines", {"scheduler", "server", "grpc"}),
    ],
)
def test_imports_run_one_way(room: str, forbidden: set[str]) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(found)
        for path in sorted((ROOT / room).rglob("*.py"))
        if (found := _imported_packages(path) & forbidden)
    }
    assert offenders == {}


def test_no_server_module_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in sorted((ROOT / "server").rglob("*.py"))
    }
    assert len(sizes) > 20
    assert {p: n for p, n in sizes.items() if n > MAX_SERVER_MODULE_LINES} == {}

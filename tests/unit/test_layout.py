"""The import rules of DESIGN.md §2: who may import whom, and a pure Raft core."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# folder -> the strom subpackages its modules may import
ALLOWED = {
    "raft": {"strom.raft"},
    "storage": {"strom.storage", "strom.raft"},
    "client": {"strom.client", "strom.v1", "strom.storage", "strom"},
    "node": {"strom", "strom.v1", "strom.raft", "strom.storage", "strom.node", "strom.client"},
}
# The Raft core does no I/O, keeps no time and draws no randomness of its own (DESIGN.md §5).
RAFT_FORBIDDEN = {"asyncio", "socket", "time", "random", "os", "grpc", "google", "threading"}


def _imports(path: Path, root: Path = ROOT) -> list[str]:
    """Absolute names of everything `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = "strom." + ".".join(path.relative_to(root).parent.parts)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                names.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.append(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _strom_offenders(paths: list[Path], allowed: set[str], root: Path = ROOT) -> list[str]:
    offenders = []
    for path in paths:
        for name in _imports(path, root):
            if name == "strom" or name.startswith("strom."):
                top = ".".join(name.split(".")[:2])
                if top not in allowed:
                    offenders.append(f"{path.relative_to(root)} imports {name}")
    return offenders


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_folders_import_only_what_design_allows(folder: str) -> None:
    offenders = _strom_offenders(_modules(folder), ALLOWED[folder])
    assert not offenders, "\n".join(offenders)


def test_raft_core_imports_only_pure_stdlib() -> None:
    offenders = []
    for path in _modules("raft"):
        for name in _imports(path):
            top = name.split(".")[0]
            if name.startswith("strom.raft"):
                continue
            if top in RAFT_FORBIDDEN or top not in sys.stdlib_module_names:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    (tmp_path / "client").mkdir()
    bad = tmp_path / "client" / "bad.py"
    bad.write_text("import time\nfrom strom.node import x\nfrom ..raft import core\n")
    assert _imports(bad, tmp_path) == ["time", "strom.node", "strom.raft"]
    offenders = _strom_offenders([bad], ALLOWED["client"], tmp_path)
    assert offenders == [
        "client/bad.py imports strom.node",
        "client/bad.py imports strom.raft",
    ]

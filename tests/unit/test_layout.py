"""The import rules of DESIGN.md §2: who may import whom, and a pure Raft core."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# folder -> the strom packages its modules may import (a name is allowed when it is one of these
# or inside one). A folder listed here is checked against its own rule only, not its parent's.
ALLOWED = {
    "raft": {"strom.raft"},
    "storage": {"strom.storage", "strom.raft"},
    "client": {"strom.client", "strom.v1", "strom.storage", "strom"},
    "node": {"strom", "strom.v1", "strom.raft", "strom.storage", "strom.node", "strom.client"},
    # The console is a client of the cluster like any other: the SDK, never the node's internals.
    "node/console": {"strom", "strom.client", "strom.node.console"},
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
    """The modules of `folder`, without those of its subfolders that have a rule of their own."""
    own_rules = [ROOT / f for f in ALLOWED if f != folder and f.startswith(folder + "/")]
    return sorted(
        p
        for p in (ROOT / folder).rglob("*.py")
        if not any(p.is_relative_to(sub) for sub in own_rules)
    )


def _allowed(name: str, allowed: set[str]) -> bool:
    if name == "strom":
        return "strom" in allowed
    # `strom` alone allows `from strom import __version__`, not every package under it.
    return any(name == a or name.startswith(a + ".") for a in allowed if a != "strom")


def _strom_offenders(paths: list[Path], allowed: set[str], root: Path = ROOT) -> list[str]:
    offenders = []
    for path in paths:
        for name in _imports(path, root):
            if (name == "strom" or name.startswith("strom.")) and not _allowed(name, allowed):
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


def test_the_checker_keeps_the_console_off_node_internals(tmp_path: Path) -> None:
    (tmp_path / "node" / "console").mkdir(parents=True)
    bad = tmp_path / "node" / "console" / "bad.py"
    bad.write_text(
        "from strom.client.admin import AsyncAdmin\nfrom strom.node.config import NODE_KEYS\n"
        "from ..metrics import exposition\nfrom .render import render_bytes\nfrom strom.v1 import x\n"
    )
    offenders = _strom_offenders([bad], ALLOWED["node/console"], tmp_path)
    assert offenders == [
        "node/console/bad.py imports strom.node.config",
        "node/console/bad.py imports strom.node.metrics",
        "node/console/bad.py imports strom.v1",
    ]
    # ...and the rest of node/ is still checked by its own, wider rule.
    assert ROOT / "node" / "cli" / "main.py" in _modules("node")
    assert not [p for p in _modules("node") if "console" in p.relative_to(ROOT).parts]


def _installed_packages(root: Path) -> tuple[set[str], set[str]]:
    """(what pyproject's hand-written `packages` lists, the packages its folders hold): every
    folder with a module under a `package-dir` root, named as setuptools would install it."""
    import tomllib

    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for package, folder in setuptools["package-dir"].items():
        base = root / folder
        for module in base.rglob("*.py"):
            parts = module.parent.relative_to(base).parts
            if "__pycache__" in parts:
                continue
            found.add(".".join((package, *parts)))
    return listed, found


def test_pyproject_packages_cover_every_package_folder() -> None:
    listed, found = _installed_packages(ROOT)
    assert not found - listed, f"folders missing from pyproject's packages: {found - listed}"
    assert not listed - found, f"pyproject lists packages with no folder: {listed - found}"


def test_the_packages_check_catches_a_forgotten_folder(tmp_path: Path) -> None:
    (tmp_path / "node" / "quorum").mkdir(parents=True)
    (tmp_path / "node" / "__init__.py").write_text("")
    (tmp_path / "node" / "quorum" / "driver.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "strom.node" = "node" }\npackages = ["strom.node"]\n'
    )
    listed, found = _installed_packages(tmp_path)
    assert found - listed == {"strom.node.quorum"}

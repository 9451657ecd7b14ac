"""The compiled codec is built by a plain wheel build, and the command line names the codec in
use. Without a C compiler the wheel test skips with one line, except under CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from strom.node.cli import build_parser
from strom.storage import compiled_codec

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCES = shutil.ignore_patterns(
    ".venv", "build", ".git", "*.so", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    ".strom", "data",
)  # fmt: skip


def test_a_wheel_build_compiles_the_codec_into_the_package(tmp_path: Path) -> None:
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        message = "no C compiler: the wheel would hold only the pure-Python codec"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI machines must have gcc")
        pytest.skip(message)
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("strom-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.startswith("strom/storage/_codec.") and n.endswith(".so")]
    assert "strom/storage/_codec.pyi" in names
    assert f"-cp3{sys.version_info.minor}-" in wheel.name  # built for this interpreter


def test_version_names_the_record_codec(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    printed = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    assert printed.endswith(f"(record codec: {compiled_codec.describe()})")

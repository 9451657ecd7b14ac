"""Regenerate the committed wire code from `proto/strom/v1/*.proto`.

Run `make proto` (or `python proto/generate.py [OUT_DIR]`). The generated `*_pb2.py`,
`*_pb2_grpc.py` and their `.pyi` stubs are committed beside the sources (DESIGN.md §2) and never
edited by hand; tests/unit/test_proto_stubs.py fails when they are stale. grpcio-tools and
mypy-protobuf are pinned exactly in pyproject.toml so the output is deterministic.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent


def proto_sources() -> list[Path]:
    return sorted((PROTO_ROOT / "strom" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    protoc_include = Path(protoc.__file__).resolve().parent / "_proto"
    # mypy-protobuf's plugins are installed beside this interpreter; name them explicitly so the
    # result does not depend on PATH.
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{protoc_include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_sources()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT)

"""The committed wire code must be exactly what `make proto` would generate (DESIGN.md §2)."""

from __future__ import annotations

import filecmp
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "strom_proto_generate", ROOT / "proto/generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generated(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    _load_generator().generate(tmp_path)
    fresh = _generated(tmp_path / "strom" / "v1")
    committed = _generated(ROOT / "proto" / "strom" / "v1")
    assert fresh, "the generator produced nothing"
    assert sorted(fresh) == sorted(committed), "run `make proto` and commit the result"
    stale = [name for name in fresh if not filecmp.cmp(fresh[name], committed[name], shallow=False)]
    assert not stale, f"stale generated files {stale}: run `make proto` and commit the result"


def test_every_proto_has_generated_code() -> None:
    for proto in (ROOT / "proto" / "strom" / "v1").glob("*.proto"):
        assert (proto.parent / f"{proto.stem}_pb2.py").exists(), f"{proto.name}: run `make proto`"


def test_error_codes_keep_kafkas_numbers() -> None:
    from strom.v1 import common_pb2

    assert common_pb2.NONE == 0
    assert common_pb2.OFFSET_OUT_OF_RANGE == 1
    assert common_pb2.CORRUPT_MESSAGE == 2
    assert common_pb2.NOT_LEADER_OR_FOLLOWER == 6
    assert common_pb2.NOT_ENOUGH_REPLICAS == 19
    assert common_pb2.FENCED_LEADER_EPOCH == 74
    assert common_pb2.UNKNOWN_SERVER_ERROR == -1


def test_every_error_code_is_kafkas_number_for_it() -> None:
    """Oracle: kafka-python's table of broker error numbers."""
    import inspect

    import kafka.errors as kafka_errors

    from strom.v1 import common_pb2

    kafka_numbers = {
        cls.errno
        for cls in vars(kafka_errors).values()
        if inspect.isclass(cls) and issubclass(cls, kafka_errors.BrokerResponseError)
    }
    for name, number in common_pb2.ErrorCode.items():
        assert number in kafka_numbers, f"{name}={number} is not a Kafka error number"

"""The compiled record codec (storage/_codec.c) against its pure-Python reference, on the same
inputs, valid and corrupted: the same bytes out of the encoder, the same verdict and result out
of the leader's framing walk, the same records or the same error out of the consumer's decoder.

Each kernel may decline (return None, or call the reference `append`) and let the reference
decide; what it must never do is accept what the reference refuses or answer differently. The
tests call the raw kernels to check exactly that, and check that they do take the common case
(a kernel that always declined would pass the rest and be useless).

Without the extension these tests skip with one line, except under CI=true, where they fail:
CI must test both paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strom.client.records import ConsumerRecord
from strom.storage import batch_validation, record_decode
from strom.storage.batch_validation import check_record_framing_py, decompress_records
from strom.storage.errors import CorruptRecordError
from strom.storage.record_batch import (
    HEADER_SIZE,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    Compression,
    PyBatchBuilder,
    parse_header,
)
from strom.storage.record_decode import _decode_records_py


def _load_compiled() -> ModuleType | None:
    try:
        from strom.storage import _codec
    except ImportError:
        return None
    return _codec


_codec = _load_compiled()


@pytest.fixture
def codec() -> ModuleType:
    if _codec is None:
        message = "the compiled codec (strom.storage._codec) is not built: pip install needs gcc"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must test the compiled path")
        pytest.skip(message)
    return _codec


def _compiled_builder(codec: ModuleType) -> type[Any]:
    """The compiled builder class, whatever STROM_PURE_PYTHON says for this process."""

    class CompiledBuilder(codec.BatchBuilderCore):  # type: ignore[name-defined,misc]
        __slots__ = ()
        _append_reference = PyBatchBuilder.append
        size_in_bytes = PyBatchBuilder.size_in_bytes
        build = PyBatchBuilder.build

    return CompiledBuilder


EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MORE_EXAMPLES = settings(EXAMPLES, max_examples=400)

TS0 = 1_700_000_000_000
header_st = st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=12)))
record_st = st.tuples(
    st.integers(TS0 - 10_000, TS0 + 20_000) | st.integers(0, 2**63 - 1),
    st.none() | st.binary(max_size=40),
    # values past 8 KiB take the multi-byte length varints (cheap bytes: hypothesis limits the
    # entropy one example may draw)
    st.none() | st.binary(max_size=200) | st.integers(8200, 9000).map(lambda n: b"x" * n),
    st.none() | st.lists(header_st, max_size=3) | st.lists(header_st, max_size=2).map(tuple),
)
records_st = st.lists(record_st, min_size=1, max_size=25)


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", result) or ("error", (type, message)): what equivalence compares."""
    try:
        return "ok", fn()
    except Exception as err:
        return "error", (type(err), str(err))


def _build(builder: Any, records: list[Any], **build: Any) -> tuple[list[Any], bytes]:
    sizes = [builder.append(*record) for record in records]
    return sizes, builder.build(**build)


# ---- the encoder ----------------------------------------------------------------------------


@EXAMPLES
@given(
    records=records_st,
    compression=st.sampled_from([Compression.NONE, Compression.GZIP]),
    sequence=st.integers(-1, 2**31 - 1),
)
def test_encoder_writes_the_same_bytes(
    codec: ModuleType, records: list[Any], compression: int, sequence: int
) -> None:
    compiled = _compiled_builder(codec)

    class Strict(compiled):  # type: ignore[misc,valid-type]
        """Fails if the kernel hands a common input to the reference."""

        __slots__ = ()

        def _append_reference(self, *args: Any, **kwargs: Any) -> int:
            raise AssertionError(f"the compiled append declined {args!r}")

    build = {"compression": compression, "producer_id": 7, "base_sequence": sequence}
    reference = _build(PyBatchBuilder(), records, **build)
    assert _build(Strict(), records, **build) == reference


odd_value_st = st.sampled_from(
    [b"", bytearray(b"ba"), memoryview(b"mv"), "text", 5, None, b"\x00" * 3]
)
odd_headers_st = st.sampled_from(
    [
        None,
        [],
        (),
        [("k", b"v")],
        [("k", bytearray(b"v"))],
        [("k", None), ("", b"")],
        [["k", b"v"]],
        [("k", b"v", b"extra")],
        [(b"k", b"v")],
        [("\ud800", b"v")],  # a lone surrogate cannot be UTF-8
        [("é", "str value")],
        "not a list",
        [(f"h{i}", b"v") for i in range(20)],  # past the kernel's 16
    ]
)
odd_ts_st = st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63), 2**70, TS0, 1.5, True, "1"])


@EXAMPLES
@given(
    calls=st.lists(
        st.tuples(odd_ts_st, odd_value_st, odd_value_st, odd_headers_st), min_size=1, max_size=6
    ),
    as_keywords=st.booleans(),
)
def test_encoder_odd_inputs_give_the_same_bytes_or_errors(
    codec: ModuleType, calls: list[Any], as_keywords: bool
) -> None:
    """Types off the fast path (bytearray, memoryview, wrong types), timestamps outside
    [0, 2**63), malformed headers: the same bytes or the same error, call by call."""
    compiled, reference = _compiled_builder(codec)(), PyBatchBuilder()
    for ts, key, value, headers in calls:
        if as_keywords:
            kwargs = {"timestamp_ms": ts, "key": key, "value": value, "headers": headers}
            got = _outcome(lambda b=compiled, kw=kwargs: b.append(**kw))  # type: ignore[misc]
            want = _outcome(lambda b=reference, kw=kwargs: b.append(**kw))  # type: ignore[misc]
        else:
            args = (ts, key, value, headers)
            got = _outcome(lambda b=compiled, a=args: b.append(*a))  # type: ignore[misc]
            want = _outcome(lambda b=reference, a=args: b.append(*a))  # type: ignore[misc]
        assert got == want
        state = ("_buffer", "count", "base_timestamp", "max_timestamp")
        assert [getattr(compiled, a) for a in state] == [getattr(reference, a) for a in state]


# ---- corrupted record sections -------------------------------------------------------------


def _uvarint(value: int, padding: int = 0) -> bytes:
    """`value` as a base-128 varint, padded with `padding` redundant bytes (non-minimal, as a
    careless or hostile writer may send)."""
    out = bytearray()
    while value >= 0x80 or padding > 0:
        if value < 0x80:
            padding -= 1
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zz(value: int) -> int:
    return (value << 1) ^ (value >> 63)


# A record to write field by field: attributes, timestamp delta, key, value, headers.
Spec = tuple[int, int, bytes | None, bytes | None, list[tuple[bytes, bytes | None]]]


def _section(
    records: list[Spec], fault_at: int = -1, fault_value: int = 0, padded_at: int = -1
) -> tuple[bytes, list[int]]:
    """(records section, the value of every varint written, in order). The `fault_at`-th varint
    is written as `fault_value` instead (a sized field made negative loses its bytes, so the
    rest stays aligned and only that field is wrong); the `padded_at`-th gets a redundant
    byte. Record lengths are written after their bodies, so they count after them."""
    values: list[int] = []

    def varint(value: int) -> bytes:
        values.append(value)
        if len(values) - 1 == fault_at:
            value = fault_value
        return _uvarint(_zz(value), 1 if len(values) - 1 == padded_at else 0)

    def sized(field: bytes | None) -> bytes:
        faulty = len(values) == fault_at
        prefix = varint(-1 if field is None else len(field))
        return prefix if faulty and fault_value < 0 else prefix + (field or b"")

    out = bytearray()
    for index, (attributes, delta, key, value, headers) in enumerate(records):
        body = bytes([attributes]) + varint(delta) + varint(index) + sized(key) + sized(value)
        body += varint(len(headers))
        for h_key, h_value in headers:
            body += sized(h_key) + sized(h_value)
        out += varint(len(body)) + body
    return bytes(out), values


spec_st = st.tuples(
    st.sampled_from([0, 7]),
    st.integers(-3, 5) | st.integers(-(2**40), 2**40),
    st.none() | st.binary(max_size=10),
    st.none() | st.binary(max_size=10),
    st.lists(st.tuples(st.binary(max_size=4), st.none() | st.binary(max_size=4)), max_size=2),
)


@st.composite
def record_section_st(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """(records, count, max timestamp delta): records written field by field, all right except
    at most one varint (a length that lies, a negative size, an offset delta out of order, a
    bad header count, a timestamp delta anywhere in int64), and maybe one written with a
    redundant byte."""
    specs = draw(st.lists(spec_st, min_size=1, max_size=4))
    _, values = _section(specs)
    fault_at = draw(st.integers(0, len(values)))  # past the last: no fault
    original = values[fault_at] if fault_at < len(values) else 0
    fault_value = draw(
        st.sampled_from([original + 1, original - 1, -1, -2, -7]) | st.integers(-(2**63), 2**63 - 1)
    )
    padded_at = draw(st.integers(0, 2 * len(values)))
    section, _ = _section(specs, fault_at, fault_value, padded_at)
    return section, len(specs), max(spec[1] for spec in specs)


def _header(count: int, base_ts: int, max_ts: int, attributes: int = 0) -> BatchHeader:
    return BatchHeader(0, 0, -1, 2, 0, attributes, count - 1, base_ts, max_ts, -1, -1, -1, count)


@st.composite
def corrupted_st(draw: st.DrawFn) -> tuple[bytes, BatchHeader, int, int]:
    """(data, header, start, end): a records section inside a buffer with bytes around it,
    from the encoder (then maybe mutated) or written field by field."""
    if draw(st.booleans()):
        builder = PyBatchBuilder()
        for ts, key, value, headers in draw(st.lists(record_st, min_size=1, max_size=8)):
            builder.append(ts, key, value, headers)
        batch = builder.build()
        header = parse_header(batch)
        section = bytearray(batch[HEADER_SIZE:])
        for _ in range(draw(st.integers(0, 2))):  # flips, cuts, insertions
            at = draw(st.integers(0, max(0, len(section) - 1)))
            kind = draw(st.sampled_from(["flip", "cut", "insert"]))
            if kind == "flip" and section:
                section[at] ^= draw(st.integers(1, 255))
            elif kind == "cut":
                del section[at : at + draw(st.integers(1, 3))]
            else:
                section[at:at] = draw(st.binary(min_size=1, max_size=3))
    else:
        raw, count, max_delta = draw(record_section_st())
        section = bytearray(raw)
        fault = draw(st.sampled_from(["none"] * 5 + ["count", "max", "base", "append time"]))
        base_ts = draw(st.sampled_from([0, -1, 2**63 - 2])) if fault == "base" else TS0
        max_ts = max(-1, TS0 + max_delta)  # the reference's largest starts at -1
        if fault == "max":
            max_ts = draw(st.sampled_from([max_ts + 1, max_ts - 1, TS0]))
        header = _header(
            draw(st.sampled_from([count + 1, count - 1, 0])) if fault == "count" else count,
            base_ts,
            max(min(max_ts, 2**63 - 1), -(2**63)),
            TIMESTAMP_TYPE_MASK if fault == "append time" else 0,
        )
    prefix, suffix = draw(st.binary(max_size=3)), draw(st.binary(max_size=3))
    data = prefix + bytes(section) + suffix
    return data, header, len(prefix), len(prefix) + len(section)


# ---- the leader's framing walk ------------------------------------------------------------


@MORE_EXAMPLES
@given(case=corrupted_st())
def test_framing_walk_agrees_with_the_reference(
    codec: ModuleType, case: tuple[bytes, BatchHeader, int, int]
) -> None:
    data, header, start, end = case
    want = _outcome(lambda: check_record_framing_py(data, header, start, end))
    raw = codec.check_record_framing(data, header, start, end)
    if raw is None:
        assert want[0] == "error", "the kernel declined a batch the reference accepts"
    else:
        assert want == ("ok", raw), "the kernel accepted a batch the reference refuses"
    with memoryview(data) as view:  # what the leader passes for uncompressed batches
        assert codec.check_record_framing(view, header, start, end) == raw


@EXAMPLES
@given(records=records_st, compression=st.sampled_from([Compression.NONE, Compression.GZIP]))
def test_framing_walk_takes_every_valid_batch(
    codec: ModuleType, records: list[Any], compression: int
) -> None:
    batch = _build(PyBatchBuilder(), records, compression=compression)[1]
    header = parse_header(batch)
    section = decompress_records(header, batch[HEADER_SIZE:])
    assert codec.check_record_framing(section, header) == check_record_framing_py(section, header)


# ---- the consumer's decoder ---------------------------------------------------------------


def _decoders(
    codec: ModuleType, data: bytes, header: BatchHeader, start: int, end: int, min_offset: int
) -> tuple[Any, tuple[str, Any]]:
    args = (data, start, end, header, ConsumerRecord, "topic", 3, min_offset)
    return codec.decode_records(*args), _outcome(lambda: _decode_records_py(*args))


def _typed(records: list[Any]) -> list[tuple[type, tuple[Any, ...]]]:
    return [(type(r), tuple((type(f), f) for f in r)) for r in records]


@MORE_EXAMPLES
@given(case=corrupted_st(), base_offset=st.integers(0, 2**40), skip=st.integers(0, 4))
def test_decoder_agrees_with_the_reference(
    codec: ModuleType, case: tuple[bytes, BatchHeader, int, int], base_offset: int, skip: int
) -> None:
    data, header, start, end = case
    header = header._replace(base_offset=base_offset)
    raw, want = _decoders(codec, data, header, start, end, base_offset + skip)
    if raw is not None:
        assert want[0] == "ok", "the kernel decoded a batch the reference refuses"
        assert _typed(raw) == _typed(want[1])
    args = (data, start, end, header, ConsumerRecord, "topic", 3, base_offset + skip)
    got = _outcome(lambda: record_decode._decode_records_compiled(*args))
    if got[0] == "ok":
        assert want[0] == "ok" and _typed(got[1]) == _typed(want[1])
    else:
        assert got == want


@EXAMPLES
@given(
    records=records_st,
    compression=st.sampled_from([Compression.NONE, Compression.GZIP]),
    log_append_time=st.booleans(),
    skip=st.integers(0, 30),
)
def test_decoder_takes_every_valid_batch(
    codec: ModuleType, records: list[Any], compression: int, log_append_time: bool, skip: int
) -> None:
    batch = _build(PyBatchBuilder(), records, compression=compression)[1]
    header = parse_header(batch)._replace(base_offset=1000)
    if log_append_time:
        header = header._replace(attributes=header.attributes | TIMESTAMP_TYPE_MASK)
    section = decompress_records(header, batch[HEADER_SIZE:])
    raw, want = _decoders(codec, section, header, 0, len(section), 1000 + skip)
    assert raw is not None
    assert want[0] == "ok" and _typed(raw) == _typed(want[1])


# ---- every single fault, exhaustively ------------------------------------------------------

SPECS: list[Spec] = [
    (0, 0, b"key", b"value", []),
    (7, 3, None, b"", [(b"h", b"v"), (b"", None)]),
    (0, -2, b"", None, [(b"x", b"")]),
]


def _faulty_sections() -> list[tuple[bytes, BatchHeader]]:
    """The records above with each varint in turn replaced by neighbours of its value and by
    values no field may hold; and the header's count, maximum timestamp and timestamp type
    wrong. Every case is wrong in exactly one place (or padded, which is allowed)."""
    section, values = _section(SPECS)
    count, max_ts = len(SPECS), TS0 + 3
    cases = [(section, _header(count, TS0, max_ts))]
    for at, original in enumerate(values):
        for bad in {original - 1, original + 1, -1, -2, -7, 0, 1, 2**62, -(2**63)}:
            cases.append((_section(SPECS, at, bad)[0], _header(count, TS0, max_ts)))
        cases.append((_section(SPECS, padded_at=at)[0], _header(count, TS0, max_ts)))
    for header in (
        _header(count + 1, TS0, max_ts),
        _header(count - 1, TS0, max_ts),
        _header(count, TS0, max_ts + 1),
        _header(count, TS0, max_ts - 1),
        _header(count, TS0, max_ts + 1, TIMESTAMP_TYPE_MASK),
        _header(count, 2**63 - 2, 2**63 - 1),  # record 1's timestamp overflows int64...
        _header(count, 2**63 - 2, 2**63 - 2),  # ...and a wrapping sum would agree with max
        _header(count, 2**63 - 4, 2**63 - 1),  # record 1 reaches int64's largest: valid
    ):
        cases.append((section, header))
    return cases


def test_every_single_fault_gets_the_references_verdict(codec: ModuleType) -> None:
    cases = _faulty_sections()
    refused = 0
    for section, header in cases:
        data = b"\x00" + section + b"\x00"  # bytes around: kernels must respect the bounds
        want = _outcome(partial(check_record_framing_py, data, header, 1, len(data) - 1))
        raw = codec.check_record_framing(data, header, 1, len(data) - 1)
        assert (want[0] == "error") if raw is None else (want == ("ok", raw)), (section, header)
        refused += want[0] == "error"
        decoded, wanted = _decoders(codec, data, header, 1, len(data) - 1, 0)
        if decoded is not None:
            assert wanted[0] == "ok" and _typed(decoded) == _typed(wanted[1]), (section, header)
    assert len(cases) > 200 and 0.5 < refused / len(cases) < 1  # the cases are mostly faults


# ---- which path runs, and saying so ---------------------------------------------------------


def test_the_compiled_path_is_bound_when_built(codec: ModuleType) -> None:
    from strom.storage import compiled_codec, record_batch

    if compiled_codec.codec is None:
        pytest.skip(f"this process runs the pure codec: {compiled_codec.unavailable_reason}")
    assert batch_validation.check_record_framing is not check_record_framing_py
    assert record_decode.decode_records is record_decode._decode_records_compiled
    assert issubclass(record_batch.BatchBuilder, codec.BatchBuilderCore)
    assert compiled_codec.describe() == "compiled (C)"


_WITHOUT_EXTENSION = """
import importlib.abc, logging, sys

class NoExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "strom.storage._codec":
            raise ImportError("simulated: no compiler at install time")
        return None

sys.meta_path.insert(0, NoExtension())
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
from strom.storage import batch_validation, compiled_codec, record_batch, record_decode
from strom.client import producer, consumer
assert record_batch.BatchBuilder is record_batch.PyBatchBuilder
assert batch_validation.check_record_framing is batch_validation.check_record_framing_py
assert record_decode.decode_records is record_decode._decode_records_py
print(compiled_codec.describe())
"""


def test_without_the_extension_the_pure_codec_runs_and_says_so_once() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTENSION],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "STROM_PURE_PYTHON"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure Python (the C extension is not built)"
    warnings = [line for line in result.stderr.splitlines() if "record codec" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING strom.storage: record codec:")
    assert "simulated: no compiler at install time" in warnings[0]


def test_strom_pure_python_chooses_the_pure_codec_quietly() -> None:
    code = "from strom.storage import compiled_codec as c; print(c.COMPILED, c.describe())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STROM_PURE_PYTHON": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False pure Python (STROM_PURE_PYTHON is set)"
    assert "record codec" not in result.stderr


def test_reference_refuses_what_int64_cannot_hold() -> None:
    """The rules the kernels rely on to stay 64-bit: both readers refuse varints wider than 64
    bits, and the framing walk refuses record timestamps outside int64."""
    eleven = b"\xff" * 9 + b"\x02"  # ten bytes, 65 bits
    with pytest.raises(CorruptRecordError, match="wider than 64 bits"):
        batch_validation._uvarint_slow(eleven, 0)
    body = b"\x00" + _uvarint(_zz(2**62)) + b"\x00\x01\x01\x00"
    section = _uvarint(_zz(len(body))) + body
    header = _header(1, 2**62, 2**63 - 1)
    with pytest.raises(CorruptRecordError, match="do not fit a signed 64-bit") as err:
        check_record_framing_py(section, header)
    assert err.value.error_name == "INVALID_TIMESTAMP"
    if _codec is not None:
        assert _codec.check_record_framing(section, header) is None

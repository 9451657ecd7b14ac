"""The Kafka codec (strom.node.kafka.codec and messages) against a second implementation.

kafka-python ships Kafka's JSON message specs and its own codecs generated from them: every
message strom serves, at every served version, with hypothesis-generated contents, encodes to
bytes kafka-python decodes and re-encodes to the very same bytes, and decodes back to what was
encoded. Malformed input raises CodecError and nothing else.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Any

import kafka.protocol
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.protocol.api_message import ApiMessage

from strom.node.kafka.codec import CodecError, Field, Reader, Schema, Versions
from strom.node.kafka.messages import APIS, Api

INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint16": (0, 2**16 - 1),
}


def _kafka_python_classes() -> dict[tuple[int, bool], type]:
    found: dict[tuple[int, bool], type] = {}
    for module in pkgutil.walk_packages(kafka.protocol.__path__, "kafka.protocol."):
        if ".old" in module.name or "generate" in module.name:
            continue
        try:
            loaded = importlib.import_module(module.name)
        except Exception:  # modules of kafka-python that need optional extras
            continue
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and issubclass(value, ApiMessage)
                and value is not ApiMessage
                and getattr(value, "_json", None)
            ):
                found[(value.API_KEY, value.is_request())] = value
    return found


ORACLE = _kafka_python_classes()


def _value(f: Field, version: int) -> st.SearchStrategy[Any]:
    if f.kind in INT_RANGES:
        low, high = INT_RANGES[f.kind]
        base: st.SearchStrategy[Any] = st.integers(low, high)
    elif f.kind == "bool":
        base = st.booleans()
    elif f.kind == "string":
        base = st.text(max_size=6)
    elif f.kind == "bytes":
        base = st.binary(max_size=6)
    elif f.kind == "records":
        base = st.just(b"")  # record batches have their own tests (storage); here: framing
    elif f.kind == "uuid":
        base = st.binary(min_size=16, max_size=16)
    elif f.kind == "float64":
        base = st.floats(allow_nan=False)
    else:
        base = message(f.fields, version)
    if not f.array and version in f.nullable:
        base = st.none() | base
    return base


def _field(f: Field, version: int) -> st.SearchStrategy[Any]:
    value = _value(f, version)
    if not f.array:
        return value
    items = st.lists(value, max_size=2)
    return st.none() | items if version in f.nullable else items


def message(fields: tuple[Field, ...], version: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {f.name: _field(f, version) for f in fields if version in f.versions}
    )


def with_defaults(fields: tuple[Field, ...], value: dict[str, Any], version: int) -> dict[str, Any]:
    out = {}
    for f in fields:
        if version not in f.versions:
            out[f.name] = f.default(version)
            continue
        v = value[f.name]
        if f.kind == "struct" and v is not None:
            v = [with_defaults(f.fields, x, version) for x in v] if f.array else (
                with_defaults(f.fields, v, version)
            )  # fmt: skip
        out[f.name] = v
    return out


CASES = [
    pytest.param(
        api, version, is_request, id=f"{api.name}-v{version}-{'req' if is_request else 'resp'}"
    )
    for api in APIS.values()
    for version in range(api.served.low, api.served.high + 1)
    for is_request in (True, False)
]


@pytest.mark.parametrize(("api", "version", "is_request"), CASES)
def test_messages_match_kafka_python_byte_for_byte(
    api: Api, version: int, is_request: bool
) -> None:
    schema = api.request if is_request else api.response
    oracle = ORACLE[(api.key, is_request)]
    if version < oracle.valid_versions[0]:
        pytest.skip(f"kafka-python reads {api.name} from v{oracle.valid_versions[0]} only")

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(message(schema.fields, version))
    def check(value: dict[str, Any]) -> None:
        if api.name == "ApiVersions" and not is_request:
            # Kafka answers errors in v0 (KIP-511); kafka-python reads any error as v0.
            value = {**value, "error_code": 0}
        data = schema.encode(value, version)
        assert schema.decode_bytes(data, version) == with_defaults(schema.fields, value, version)
        theirs = oracle.decode(data, version=version)
        theirs._header = None  # some of kafka-python's encoders look for it
        assert bytes(theirs.encode()) == data

    check()


def test_served_versions_are_within_what_kafka_defines() -> None:
    for api in APIS.values():
        low, high = ORACLE[(api.key, True)].valid_versions
        assert api.served.high <= high, api.name
        flexible = ORACLE[(api.key, True)]._flexible_versions
        for version in range(max(low, api.served.low), api.served.high + 1):
            expected = flexible is not None and flexible[0] <= version <= flexible[1]
            assert api.is_flexible(version) == expected, (api.name, version)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(APIS)), st.binary(max_size=64), st.data())
def test_garbage_raises_codec_error_only(key: int, data: bytes, choice: st.DataObject) -> None:
    api = APIS[key]
    version = choice.draw(st.integers(api.served.low, api.served.high))
    with contextlib.suppress(CodecError):
        api.request.decode_bytes(data, version)


def test_truncated_and_oversized_lengths_are_codec_errors() -> None:
    schema = Schema.of("T", "names [string] 0+\nblob bytes 0+", "1+")
    good = schema.encode({"names": ["a", "bc"], "blob": b"xyz"}, 0)
    for cut in range(len(good)):
        with pytest.raises(CodecError):
            schema.decode_bytes(good[:cut], 0)
    with pytest.raises(CodecError):  # two billion elements announced in a few bytes
        schema.decode_bytes(b"\x7f\xff\xff\xff\x00", 0)
    with pytest.raises(CodecError):  # a varint that never ends
        schema.decode(Reader(b"\xff" * 8), 1)


def test_tagged_fields_round_trip_and_unknown_tags_are_skipped() -> None:
    schema = Schema.of("T", "a int32 0+\nb string 0+ tag=3 default=x\nc int8 0+", "0+")
    data = schema.encode({"a": 7, "b": "hello", "c": 1}, 0)
    assert schema.decode_bytes(data, 0) == {"a": 7, "b": "hello", "c": 1}
    assert schema.encode({"a": 7, "b": "x", "c": 1}, 0).endswith(b"\x00")  # default: omitted
    other = Schema.of("T", "a int32 0+\nc int8 0+", "0+")
    assert other.decode_bytes(data, 0) == {"a": 7, "c": 1}


def test_versions_parse() -> None:
    assert 5 in Versions.parse("3+") and 2 not in Versions.parse("3+")
    assert 7 in Versions.parse("0-7") and 8 not in Versions.parse("0-7")
    assert 0 not in Versions.parse("none")

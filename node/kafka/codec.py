"""Kafka's wire encoding, driven by declarative field tables rather than code per API.

A message is described by a small text table (node/kafka/messages.py), one field a line,
nested by indentation, in the shape of Kafka's own JSON message specs:

    name type versions [null=versions] [tag=N] [default=value]

`type` is one of int8, int16, int32, int64, uint16, float64, bool, string, bytes, records, uuid,
struct, or an array of one of them in brackets (`[int32]`, `[struct]`); `versions` is `3+`, `0-7`
or `4`. A message decodes to a plain dict (field name -> value, nested dicts for structs) and
encodes from one; a field absent at a version decodes to its default and is not written.

Flexible versions (KIP-482) use compact lengths (unsigned varint of length + 1, 0 for null) for
strings, bytes and arrays, and end every struct with tagged fields: a count, then (tag, size,
value) each. Unknown tags are skipped when decoding; a tagged field is written only when it
differs from its default. Any malformed input raises `CodecError`, never anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")

ZERO_UUID = bytes(16)


class CodecError(ValueError):
    """Bytes that are not a valid encoding of the expected message."""


# ---- primitives ---------------------------------------------------------------------------


class Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0:
            raise CodecError(f"negative length {n}")
        end = self.pos + n
        if end > len(self.data):
            raise CodecError(f"truncated: {n} bytes wanted at {self.pos}, {len(self.data)} in all")
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def _fixed(self, s: struct.Struct) -> Any:
        end = self.pos + s.size
        if end > len(self.data):
            raise CodecError(f"truncated at {self.pos}")
        (value,) = s.unpack_from(self.data, self.pos)
        self.pos = end
        return value

    def int8(self) -> int:
        return int(self._fixed(_I8))

    def int16(self) -> int:
        return int(self._fixed(_I16))

    def uint16(self) -> int:
        return int(self._fixed(_U16))

    def int32(self) -> int:
        return int(self._fixed(_I32))

    def int64(self) -> int:
        return int(self._fixed(_I64))

    def float64(self) -> float:
        return float(self._fixed(_F64))

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            if self.pos >= len(self.data):
                raise CodecError("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 28:
                raise CodecError("varint longer than 5 bytes")

    def remaining(self) -> int:
        return len(self.data) - self.pos


class Writer:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        self.parts.append(data)

    def int8(self, v: int) -> None:
        self.parts.append(_I8.pack(v))

    def int16(self, v: int) -> None:
        self.parts.append(_I16.pack(v))

    def uint16(self, v: int) -> None:
        self.parts.append(_U16.pack(v))

    def int32(self, v: int) -> None:
        self.parts.append(_I32.pack(v))

    def int64(self, v: int) -> None:
        self.parts.append(_I64.pack(v))

    def float64(self, v: float) -> None:
        self.parts.append(_F64.pack(v))

    def uvarint(self, v: int) -> None:
        out = bytearray()
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
        self.parts.append(bytes(out))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


# ---- field tables -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Versions:
    low: int
    high: int  # inclusive; a large number for "N+"

    @staticmethod
    def parse(text: str) -> Versions:
        if text == "none":
            return Versions(1, 0)
        if text.endswith("+"):
            return Versions(int(text[:-1]), 1 << 15)
        low, _, high = text.partition("-")
        return Versions(int(low), int(high or low))

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.low <= version <= self.high


NEVER = Versions(1, 0)

_PRIMITIVES = frozenset(
    {"int8", "int16", "uint16", "int32", "int64", "float64", "bool", "string", "bytes",
     "records", "uuid", "struct"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str
    array: bool
    versions: Versions
    nullable: Versions = NEVER
    tag: int | None = None
    default_text: str | None = None
    fields: tuple[Field, ...] = ()

    def default(self, version: int) -> Any:
        if self.array:
            return None if version in self.nullable and self.default_text == "null" else []
        if self.kind == "struct":
            return {f.name: f.default(version) for f in self.fields}
        text = self.default_text
        if text == "null" or (text is None and version in self.nullable):
            return None
        if self.kind in ("string",):
            return text or ""
        if self.kind in ("bytes", "records"):
            return b""
        if self.kind == "bool":
            return text == "true"
        if self.kind == "uuid":
            return ZERO_UUID
        if self.kind == "float64":
            return float(text or 0)
        return int(text, 0) if text else 0


def parse_fields(table: str) -> tuple[Field, ...]:
    """Fields of an indented table (see the module docstring)."""
    lines = [
        line for line in table.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    fields, rest = _parse_level(lines, 0, 0)
    if rest != len(lines):
        raise ValueError(f"bad indentation at {lines[rest]!r}")
    return fields


def _parse_level(lines: list[str], index: int, indent: int) -> tuple[tuple[Field, ...], int]:
    out: list[Field] = []
    while index < len(lines):
        line = lines[index]
        level = len(line) - len(line.lstrip(" "))
        if level < indent:
            break
        if level > indent:
            raise ValueError(f"unexpected indentation at {line!r}")
        name, kind, versions, *options = line.split()
        array = kind.startswith("[")
        kind = kind.strip("[]")
        if kind not in _PRIMITIVES:
            raise ValueError(f"unknown type {kind!r} in {line!r}")
        opts = dict(o.split("=", 1) for o in options)
        children: tuple[Field, ...] = ()
        index += 1
        if kind == "struct":
            children, index = _parse_level(lines, index, indent + 2)
        out.append(
            Field(
                name,
                kind,
                array,
                Versions.parse(versions),
                Versions.parse(opts["null"]) if "null" in opts else NEVER,
                int(opts["tag"]) if "tag" in opts else None,
                opts.get("default"),
                children,
            )
        )
    return tuple(out), index


@dataclass(slots=True)
class Schema:
    """One message (or header) type: its fields and from which version it is flexible."""

    name: str
    fields: tuple[Field, ...]
    flexible: Versions

    @staticmethod
    def of(name: str, table: str, flexible: str) -> Schema:
        return Schema(name, parse_fields(table), Versions.parse(flexible))

    def decode(self, reader: Reader, version: int) -> Message:
        try:
            return _read_struct(reader, self.fields, version, version in self.flexible)
        except (struct.error, UnicodeDecodeError, IndexError, OverflowError) as exc:
            raise CodecError(f"{self.name} v{version}: {exc}") from exc
        except CodecError as exc:
            raise CodecError(f"{self.name} v{version}: {exc}") from exc

    def decode_bytes(self, data: bytes, version: int) -> Message:
        return self.decode(Reader(data), version)

    def encode(self, message: Message, version: int) -> bytes:
        writer = Writer()
        self.write(writer, message, version)
        return writer.getvalue()

    def write(self, writer: Writer, message: Message, version: int) -> None:
        try:
            _write_struct(writer, self.fields, message, version, version in self.flexible)
        except (struct.error, TypeError, AttributeError) as exc:
            raise CodecError(f"{self.name} v{version}: cannot encode: {exc}") from exc


# ---- reading ------------------------------------------------------------------------------


def _read_length(reader: Reader, flexible: bool, short: bool) -> int:
    """-1 for null."""
    if flexible:
        return reader.uvarint() - 1
    return reader.int16() if short else reader.int32()


def _read_value(reader: Reader, f: Field, version: int, flexible: bool) -> Any:
    kind = f.kind
    if kind == "int32":
        return reader.int32()
    if kind == "int16":
        return reader.int16()
    if kind == "int64":
        return reader.int64()
    if kind == "int8":
        return reader.int8()
    if kind == "string":
        n = _read_length(reader, flexible, short=True)
        if n < 0:
            if version not in f.nullable:
                raise CodecError(f"{f.name}: null where not nullable")
            return None
        return reader.take(n).decode("utf-8")
    if kind in ("bytes", "records"):
        n = _read_length(reader, flexible, short=False)
        if n < 0:
            if version not in f.nullable:
                raise CodecError(f"{f.name}: null where not nullable")
            return None
        return reader.take(n)
    if kind == "bool":
        return reader.int8() != 0
    if kind == "struct":
        return _read_struct(reader, f.fields, version, flexible)
    if kind == "uuid":
        return reader.take(16)
    if kind == "uint16":
        return reader.uint16()
    if kind == "float64":
        return reader.float64()
    raise CodecError(f"unknown kind {kind}")  # unreachable: parse_fields checks kinds


def _read_field(reader: Reader, f: Field, version: int, flexible: bool) -> Any:
    if not f.array:
        return _read_value(reader, f, version, flexible)
    n = _read_length(reader, flexible, short=False)
    if n < 0:
        if version not in f.nullable:
            raise CodecError(f"{f.name}: null array where not nullable")
        return None
    if n > reader.remaining():  # every element takes at least one byte
        raise CodecError(f"{f.name}: {n} elements in {reader.remaining()} bytes")
    return [_read_value(reader, f, version, flexible) for _ in range(n)]


def _read_struct(
    reader: Reader, fields: tuple[Field, ...], version: int, flexible: bool
) -> Message:
    out: Message = {}
    tagged: dict[int, Field] = {}
    for f in fields:
        if version not in f.versions:
            out[f.name] = f.default(version)
        elif f.tag is not None and flexible:
            tagged[f.tag] = f
            out[f.name] = f.default(version)
        else:
            out[f.name] = _read_field(reader, f, version, flexible)
    if flexible:
        for _ in range(reader.uvarint()):
            tag = reader.uvarint()
            size = reader.uvarint()
            known = tagged.get(tag)
            if known is None:
                reader.take(size)
                continue
            inner = Reader(reader.take(size))
            out[known.name] = _read_field(inner, known, version, flexible)
    return out


# ---- writing ------------------------------------------------------------------------------


def _write_length(writer: Writer, n: int, flexible: bool, short: bool) -> None:
    if flexible:
        writer.uvarint(n + 1)
    elif short:
        writer.int16(n)
    else:
        writer.int32(n)


def _write_value(writer: Writer, f: Field, value: Any, version: int, flexible: bool) -> None:
    kind = f.kind
    if kind == "int32":
        writer.int32(value)
    elif kind == "int16":
        writer.int16(value)
    elif kind == "int64":
        writer.int64(value)
    elif kind == "int8":
        writer.int8(value)
    elif kind == "string":
        if value is None:
            if version not in f.nullable:
                raise CodecError(f"{f.name}: null where not nullable at v{version}")
            _write_length(writer, -1, flexible, short=True)
        else:
            data = value.encode("utf-8")
            _write_length(writer, len(data), flexible, short=True)
            writer.raw(data)
    elif kind in ("bytes", "records"):
        if value is None:
            if version not in f.nullable:
                raise CodecError(f"{f.name}: null where not nullable at v{version}")
            _write_length(writer, -1, flexible, short=False)
        else:
            _write_length(writer, len(value), flexible, short=False)
            writer.raw(bytes(value))
    elif kind == "bool":
        writer.int8(1 if value else 0)
    elif kind == "struct":
        _write_struct(writer, f.fields, value, version, flexible)
    elif kind == "uuid":
        if len(value) != 16:
            raise CodecError(f"{f.name}: a uuid has 16 bytes, not {len(value)}")
        writer.raw(bytes(value))
    elif kind == "uint16":
        writer.uint16(value)
    elif kind == "float64":
        writer.float64(value)


def _write_field(writer: Writer, f: Field, value: Any, version: int, flexible: bool) -> None:
    if not f.array:
        _write_value(writer, f, value, version, flexible)
        return
    if value is None:
        if version not in f.nullable:
            raise CodecError(f"{f.name}: null array where not nullable at v{version}")
        _write_length(writer, -1, flexible, short=False)
        return
    _write_length(writer, len(value), flexible, short=False)
    for item in value:
        _write_value(writer, f, item, version, flexible)


def _write_struct(
    writer: Writer, fields: tuple[Field, ...], message: Message, version: int, flexible: bool
) -> None:
    tagged: list[tuple[int, bytes]] = []
    for f in fields:
        if version not in f.versions:
            continue
        value = message.get(f.name, _MISSING)
        if value is _MISSING:
            value = f.default(version)
        if f.tag is not None and flexible:
            if value == f.default(version):
                continue
            inner = Writer()
            _write_field(inner, f, value, version, flexible)
            tagged.append((f.tag, inner.getvalue()))
            continue
        _write_field(writer, f, value, version, flexible)
    if flexible:
        writer.uvarint(len(tagged))
        for tag, data in sorted(tagged):
            writer.uvarint(tag)
            writer.uvarint(len(data))
            writer.raw(data)


_MISSING = object()

"""The record codecs of Kafka's RecordBatch (attributes bits 0-2): gzip in zlib; snappy, lz4
and zstd through cramjam, one maintained wheel for all three.

Snappy comes in two shapes: raw blocks (librdkafka, Go clients) and the xerial framing Java
clients write (a magic header, then length-prefixed raw blocks); both are read, raw is written.
LZ4 is the LZ4 frame format Kafka uses from message format v1 on; zstd is a zstd frame.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import cramjam

NONE = 0
GZIP = 1
SNAPPY = 2
LZ4 = 3
ZSTD = 4

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16  # magic, version int32, compatible version int32
_BLOCK = struct.Struct(">i")


class DecompressionError(ValueError):
    """The records do not decompress; `too_large` when they would exceed the limit."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def compress(codec: int, data: bytes | bytearray | memoryview, gzip_level: int = 6) -> bytes:
    if codec == NONE:
        return bytes(data)
    if codec == GZIP:
        packer = zlib.compressobj(gzip_level, zlib.DEFLATED, 31)  # 31: gzip container
        return packer.compress(data) + packer.flush()
    if codec == SNAPPY:
        return bytes(cramjam.snappy.compress_raw(bytes(data)))
    if codec == LZ4:
        return bytes(cramjam.lz4.compress(bytes(data)))
    if codec == ZSTD:
        return bytes(cramjam.zstd.compress(bytes(data)))
    raise ValueError(f"unknown compression codec {codec}")


def decompress(codec: int, payload: bytes | bytearray | memoryview, limit: int) -> bytes:
    """The records `payload` holds, at most `limit` bytes of them."""
    if codec == NONE:
        return bytes(payload)
    if codec == GZIP:
        return _gunzip(payload, limit)
    try:
        if codec == SNAPPY:
            data = _unsnappy(bytes(payload), limit)
        elif codec == LZ4:
            data = _bounded(cramjam.lz4, bytes(payload), limit)
        elif codec == ZSTD:
            data = _bounded(cramjam.zstd, bytes(payload), limit)
        else:
            raise DecompressionError(f"unknown compression codec {codec}")
    except cramjam.DecompressionError as err:
        raise DecompressionError(f"records do not decompress: {err}") from err
    if len(data) > limit:
        raise DecompressionError(f"records decompress to more than {limit} bytes", True)
    return data


def _bounded(module: Any, payload: bytes, limit: int) -> bytes:
    """Decompress into buffers that grow up to `limit` + 1 bytes: a bomb costs at most that much
    memory, however far it would inflate (frames need not state their content size)."""
    size = min(limit + 1, max(1 << 16, 16 * len(payload)))
    while True:
        out = bytearray(size)
        try:
            written = int(module.decompress_into(payload, out))
        except cramjam.DecompressionError as err:
            if "failed to write whole buffer" not in str(err):
                raise
            if size > limit:
                raise DecompressionError(
                    f"records decompress to more than {limit} bytes", True
                ) from err
            size = min(limit + 1, size * 8)
            continue
        if written > limit:
            raise DecompressionError(f"records decompress to more than {limit} bytes", True)
        return bytes(out[:written])


def _gunzip(payload: bytes | bytearray | memoryview, limit: int) -> bytes:
    inflater = zlib.decompressobj(47)  # 47: accept gzip or zlib containers
    try:
        # One byte past the bound tells "too large" from "exactly the bound".
        data = inflater.decompress(payload, limit + 1)
    except zlib.error as err:
        raise DecompressionError(f"gzip records do not decompress: {err}") from err
    if len(data) > limit:
        raise DecompressionError(f"records decompress to more than {limit} bytes", True)
    if not inflater.eof:
        raise DecompressionError("gzip records are truncated")
    return data


def _raw_block(block: bytes, limit: int) -> bytes:
    if cramjam.snappy.decompress_raw_len(block) > limit:
        raise DecompressionError(f"records decompress to more than {limit} bytes", True)
    return bytes(cramjam.snappy.decompress_raw(block))


def _unsnappy(payload: bytes, limit: int) -> bytes:
    if not payload.startswith(XERIAL_MAGIC):
        return _raw_block(payload, limit)
    parts: list[bytes] = []
    size = 0
    pos = _XERIAL_HEADER
    while pos < len(payload):
        if pos + 4 > len(payload):
            raise DecompressionError("xerial snappy block length is truncated")
        (n,) = _BLOCK.unpack_from(payload, pos)
        pos += 4
        if n < 0 or pos + n > len(payload):
            raise DecompressionError("xerial snappy block is truncated")
        block = _raw_block(payload[pos : pos + n], limit - size)
        parts.append(block)
        size += len(block)
        pos += n
    return b"".join(parts)

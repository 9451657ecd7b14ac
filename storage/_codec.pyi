"""Types of the C extension storage/_codec.c (see its header comment and storage/compiled_codec.py).

Each reader returns None where the pure-Python reference must decide; `append` runs the
reference `_append_reference` itself for anything off its fast path.
"""

from collections.abc import Sequence
from typing import TypeVar

_T = TypeVar("_T", bound=tuple)  # type: ignore[type-arg]
_Buffer = bytes | bytearray | memoryview

class BatchBuilderCore:
    _buffer: bytearray
    count: int
    base_timestamp: int
    max_timestamp: int
    def append(
        self,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> int: ...

def check_record_framing(
    data: _Buffer, header: tuple[int, ...], start: int = 0, end: int | None = None
) -> int | None: ...
def decode_records(
    buf: bytes,
    pos: int,
    stop: int,
    header: tuple[int, ...],
    record_type: type[_T],
    topic: str,
    partition: int,
    min_offset: int,
) -> list[_T] | None: ...

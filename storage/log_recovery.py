"""Opening a partition folder's segments, with recovery after an unclean shutdown (Kafka's
LogLoader).

Rules (DESIGN.md §4):
- Leftover temporary files (`*.tmp`, and the log cleaner's `*.cleaned`) and index files without
  a `.log` are deleted.
- After a clean shutdown every segment's indexes are loaded and trusted; an unusable index is
  rebuilt from its `.log` (which must then be intact).
- After an unclean shutdown every segment from the one containing the recovery point on is
  rescanned from byte 0 (index pages may have reached the disk before log pages): each batch's
  bounds, magic, CRC and offset order are checked, the segment is truncated at the first bad
  byte, all later segments are deleted, and the indexes are rebuilt.
- Segments below the recovery point are not rescanned; their bytes are CRC-checked when first
  served (`LogSegment.unverified_end`), and damage there is a `LogCorruptionError`.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import LogCorruptionError
from .log_segment import (
    CLEANED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    TXN_INDEX_SUFFIX,
    LogSegment,
)
from .record_batch import BatchHeader

_SEGMENT_FILE = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex|\.txnindex)$")


@dataclass(frozen=True, slots=True)
class LoadResult:
    segments: list[LogSegment]
    recovered_segments: int  # segments rescanned because of an unclean shutdown
    truncated_bytes: int  # bytes cut from the end of the log by recovery


def _list_files(directory: str) -> dict[int, set[str]]:
    """Base offset → suffixes present; deletes leftovers that can never be valid."""
    found: dict[int, set[str]] = {}
    for name in os.listdir(directory):
        if name.endswith((".tmp", CLEANED_SUFFIX)):
            os.remove(os.path.join(directory, name))
            continue
        match = _SEGMENT_FILE.match(name)
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2))
    for base, suffixes in list(found.items()):
        if LOG_SUFFIX not in suffixes:
            for suffix in suffixes & {INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX}:
                os.remove(os.path.join(directory, f"{base:020d}{suffix}"))
            del found[base]
    return found


def load_segments(
    directory: str,
    *,
    clean_shutdown: bool,
    recovery_point: int,
    index_interval_bytes: int,
    now_ms: int,
    on_recovered_batch: Callable[[BatchHeader], None],
) -> LoadResult:
    """Open every segment in `directory`, recovering as the module docstring says. Returns the
    segments in offset order (possibly none)."""
    bases = sorted(_list_files(directory))
    segments: list[LogSegment] = []
    recovered = 0
    truncated = 0
    for i, base in enumerate(bases):
        segment = LogSegment(directory, base, index_interval_bytes, now_ms)
        next_base = bases[i + 1] if i + 1 < len(bases) else None
        unflushed = next_base is None or next_base > recovery_point
        if not clean_shutdown and unflushed:
            recovered += 1
            cut = segment.recover(truncate=True, on_batch=on_recovered_batch)
            truncated += cut
            segments.append(segment)
            if cut and next_base is not None:
                # Everything after a damaged unflushed segment is unreliable too.
                for later in bases[i + 1 :]:
                    doomed = LogSegment(directory, later, index_interval_bytes, now_ms)
                    truncated += doomed.size
                    doomed.delete()
                break
            continue
        if not segment.load_trusted():
            segment.recover(truncate=False)
        segments.append(segment)
    _check_order(segments)
    return LoadResult(segments, recovered, truncated)


def _check_order(segments: list[LogSegment]) -> None:
    for before, after in itertools.pairwise(segments):
        if before.next_offset > after.base_offset:
            raise LogCorruptionError(
                after.log_path,
                0,
                f"segment starts at offset {after.base_offset} but the previous one runs to "
                f"{before.next_offset - 1}",
            )

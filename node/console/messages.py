"""Records of a topic in the console: browse (newest, from an offset, from a time), live tail and
produce from a form.

Bounds: a browse shows at most `BROWSE_LIMIT_MAX` records and reads for at most
`BROWSE_DEADLINE_S`; each record is rendered (and capped, node/console/render.py) as soon as it
is read, so the raw bytes of a page's records are never held together. A tail sends at most
`TAIL_RECORDS_PER_EVENT_MAX` records per poll and lives at most `TAIL_DURATION_S_MAX`; the
browser reconnects and resumes from the positions it was last sent (`Last-Event-ID`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from strom.client.aio import ConsumerRecord, TopicPartition

from .cluster import EARLIEST, LATEST, ClusterAccess
from .render import InputError, Rendered, human_time_ms, render_bytes

BROWSE_LIMIT_DEFAULT = 50
BROWSE_LIMIT_MAX = 500
BROWSE_DEADLINE_S = 5.0
TAIL_DURATION_S_MAX = 600.0
TAIL_RECORDS_PER_EVENT_MAX = 200
FUTURE_SLACK_MS = 1_000  # clocks differ a little: "future" means beyond this
MODES = ("newest", "offset", "timestamp")


@dataclass(frozen=True, slots=True)
class BrowseQuery:
    partition: int | None  # None: every partition
    mode: str = "newest"
    offset: int | None = None
    timestamp_ms: int | None = None
    limit: int = BROWSE_LIMIT_DEFAULT
    render: str = "auto"
    cap_bytes: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class RecordView:
    partition: int
    offset: int
    timestamp_ms: int
    key: Rendered
    value: Rendered
    headers: tuple[tuple[str, Rendered], ...]

    @property
    def time_text(self) -> str:
        return human_time_ms(self.timestamp_ms)

    def as_json(self) -> dict[str, object]:
        def part(r: Rendered) -> dict[str, object]:
            return {
                "kind": r.kind,
                "text": r.text,
                "size": r.size_bytes,
                "truncated": r.truncated,
                "note": r.note,
            }

        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
            "time": self.time_text,
            "key": part(self.key),
            "value": part(self.value),
            "headers": [[name, part(value)] for name, value in self.headers],
        }


def record_view(record: ConsumerRecord, render: str, cap_bytes: int) -> RecordView:
    return RecordView(
        record.partition,
        record.offset,
        record.timestamp,
        render_bytes(record.key, render, cap_bytes),
        render_bytes(record.value, render, cap_bytes),
        tuple((name, render_bytes(value, render, cap_bytes)) for name, value in record.headers),
    )


@dataclass(frozen=True, slots=True)
class BrowseResult:
    records: tuple[RecordView, ...]
    notes: tuple[str, ...]


async def partitions_of(access: ClusterAccess, topic: str, wanted: int | None) -> list[int]:
    (description,) = await access.admin.describe_topics([topic], include_configs=False)
    every = [p.partition for p in description.partitions]
    if wanted is None:
        return every
    if wanted not in every:
        raise InputError(
            f"topic {topic!r} has no partition {wanted} (it has 0 to {len(every) - 1})"
        )
    return [wanted]


async def browse(access: ClusterAccess, topic: str, query: BrowseQuery) -> BrowseResult:
    if query.mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {query.mode!r}")
    partitions = await partitions_of(access, topic, query.partition)
    tps = [(topic, p) for p in partitions]
    admin = access.admin
    earliest, latest = await asyncio.gather(
        admin.list_offsets(tps, EARLIEST), admin.list_offsets(tps, LATEST)
    )
    notes: list[str] = []
    starts = await _starts(access, query, tps, earliest, latest, notes)
    stops = {tp: min(latest[tp], start + query.limit) for tp, start in starts.items()}
    wanted = {TopicPartition(*tp): (start, stops[tp]) for tp, start in starts.items()}
    wanted = {tp: span for tp, span in wanted.items() if span[0] < span[1]}
    records = await _read(access, wanted, query, notes) if wanted else []
    newest_first = query.mode == "newest"
    records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset), reverse=newest_first)
    if not records and not notes:
        notes.append("No records in this range.")
    return BrowseResult(tuple(records[: query.limit]), tuple(notes))


async def _starts(
    access: ClusterAccess,
    query: BrowseQuery,
    tps: list[tuple[str, int]],
    earliest: dict[tuple[str, int], int],
    latest: dict[tuple[str, int], int],
    notes: list[str],
) -> dict[tuple[str, int], int]:
    if query.mode == "newest":
        return {tp: max(earliest[tp], latest[tp] - query.limit) for tp in tps}
    if query.mode == "offset":
        assert query.offset is not None
        starts = {}
        for tp in tps:
            if query.offset >= latest[tp]:
                notes.append(
                    f"Partition {tp[1]} ends at offset {latest[tp]} (its high watermark): "
                    f"nothing at offset {query.offset} yet."
                )
            elif query.offset < earliest[tp]:
                notes.append(
                    f"Partition {tp[1]} starts at offset {earliest[tp]} (older records were "
                    f"deleted): showing from there."
                )
            starts[tp] = max(earliest[tp], query.offset)
        return starts
    assert query.timestamp_ms is not None
    now_ms = int(time.time() * 1000)
    if query.timestamp_ms > now_ms + FUTURE_SLACK_MS:
        notes.append(
            f"{human_time_ms(query.timestamp_ms)} is in the future: no record can have been "
            "written at or after it yet. Pick an earlier time, or use the live tail."
        )
        return {}
    by_time = await access.admin.list_offsets(tps, query.timestamp_ms)
    starts = {tp: o for tp, o in by_time.items() if o >= 0}
    if not starts:
        notes.append(f"No record was written at or after {human_time_ms(query.timestamp_ms)}.")
    return starts


async def _read(
    access: ClusterAccess,
    wanted: dict[TopicPartition, tuple[int, int]],
    query: BrowseQuery,
    notes: list[str],
) -> list[RecordView]:
    """Records in [start, stop) of each partition, until all are read or the deadline."""
    views: list[RecordView] = []
    done: set[TopicPartition] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BROWSE_DEADLINE_S
    async with access.consumer() as consumer:
        consumer.assign(list(wanted))
        for tp, (start, _) in wanted.items():
            consumer.seek(tp, start)
        while len(done) < len(wanted) and loop.time() < deadline:
            remaining_ms = int((deadline - loop.time()) * 1000)
            for record in await consumer.poll(timeout_ms=max(1, min(500, remaining_ms))):
                tp = TopicPartition(record.topic, record.partition)
                stop = wanted[tp][1]
                if record.offset < stop and tp not in done:
                    views.append(record_view(record, query.render, query.cap_bytes))
                if record.offset >= stop - 1:
                    done.add(tp)
            for tp in wanted:
                if tp not in done and await consumer.position(tp) >= wanted[tp][1]:
                    done.add(tp)  # compaction left a gap at the end of the range
    if len(done) < len(wanted):
        notes.append(
            f"Stopped reading after {BROWSE_DEADLINE_S:.0f} s: some partitions were not read "
            "to the end of the range."
        )
    return views


# ---- live tail ---------------------------------------------------------------------------------


def encode_positions(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def decode_positions(text: str | None) -> dict[int, int]:
    """Positions from a Last-Event-ID; anything malformed is ignored (start at the end)."""
    out = {}
    for item in (text or "").split(","):
        partition, _, offset = item.partition(":")
        if partition.isdigit() and offset.isdigit():
            out[int(partition)] = int(offset)
    return out


async def tail(
    access: ClusterAccess,
    topic: str,
    partitions: Sequence[int],
    resume: dict[int, int],
    render: str,
    cap_bytes: int,
) -> AsyncIterator[tuple[str, str, str]]:
    """Server-sent events (event, data, id): first `ready` once the start positions are
    known (records produced after it are shown), then a `records` event per poll that got any."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TAIL_DURATION_S_MAX
    async with access.consumer() as consumer:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        latest = await consumer.list_offsets(tps, LATEST)
        positions = {}
        for tp in tps:
            start = resume.get(tp.partition, latest[tp])
            consumer.seek(tp, min(start, latest[tp]))
            positions[tp.partition] = min(start, latest[tp])
        yield "ready", json.dumps({"positions": positions}), encode_positions(positions)
        while loop.time() < deadline:
            records = await consumer.poll(timeout_ms=1_000, max_records=TAIL_RECORDS_PER_EVENT_MAX)
            if not records:
                yield "", "", ""  # a keep-alive: lets the server notice a closed page
                continue
            views = [record_view(r, render, cap_bytes).as_json() for r in records]
            for r in records:
                positions[r.partition] = r.offset + 1
            yield "records", json.dumps(views), encode_positions(positions)


# ---- produce -----------------------------------------------------------------------------------

PRODUCE_BYTES_MAX = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Produced:
    partition: int
    offset: int


async def produce(
    access: ClusterAccess,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    partition: int | None,
) -> Produced:
    size = len(key or b"") + len(value or b"") + sum(len(n) + len(v) for n, v in headers)
    if size > PRODUCE_BYTES_MAX:
        raise InputError(
            f"the message is {size:,} bytes; the console produces at most "
            f"{PRODUCE_BYTES_MAX:,} bytes per message (use the SDK or `strom produce`)"
        )
    if partition is not None:
        await partitions_of(access, topic, partition)
    producer = await access.producer()
    future = await producer.send(topic, value, key=key, headers=headers, partition=partition)
    await producer.flush()
    result = await future
    return Produced(result.partition, result.offset)

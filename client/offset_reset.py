"""Where a consumer group's committed offsets go when they are reset: one pure planner, shared by
`strom groups reset-offsets` and the console, so a dry run in either shows what the other would do.

Kafka's `kafka-consumer-groups --reset-offsets` strategies, with its clamping: every new offset is
kept within the partition's [earliest, latest] range (latest is the high watermark).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

STRATEGIES = ("to-earliest", "to-latest", "to-offset", "shift-by", "to-datetime")

Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ResetRequest:
    """`value`: the offset (to-offset), the shift (shift-by) or the time in ms (to-datetime)."""

    strategy: str
    value: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
        if self.strategy in ("to-offset", "shift-by", "to-datetime") and self.value is None:
            raise ValueError(f"{self.strategy} needs a value")


def plan_offsets_reset(
    request: ResetRequest,
    partitions: Sequence[Partition],
    committed: Mapping[Partition, int],
    earliest: Mapping[Partition, int],
    latest: Mapping[Partition, int],
    by_time: Mapping[Partition, int] | None = None,
) -> dict[Partition, int]:
    """The new committed offset of each of `partitions`. `by_time` (to-datetime only) holds the
    first offset at or after the time, -1 where there is none (then: latest)."""
    new: dict[Partition, int] = {}
    for tp in partitions:
        if request.strategy == "to-earliest":
            offset = earliest[tp]
        elif request.strategy == "to-latest":
            offset = latest[tp]
        elif request.strategy == "to-offset":
            assert request.value is not None
            offset = request.value
        elif request.strategy == "shift-by":
            assert request.value is not None
            offset = committed.get(tp, earliest[tp]) + request.value
        else:
            assert by_time is not None, "to-datetime needs the offsets by time"
            found = by_time.get(tp, -1)
            offset = found if found >= 0 else latest[tp]
        new[tp] = max(earliest[tp], min(latest[tp], offset))
    return new

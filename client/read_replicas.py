"""The consumer's side of KIP-392 (fetch from the closest replica): the follower each
partition's leader named as its preferred read replica for this consumer's `client_rack`.

A partition with an entry is fetched from that follower until the entry expires
(`metadata_max_age_ms`, as Kafka's consumer does; the leader then chooses again, so a better
replica or a changed rack layout is picked up) or the follower answers with any error, or
cannot be reached: the consumer then goes back to the leader, which may name a replica again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .records import TopicPartition


class ReadReplicas:
    def __init__(self, max_age_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_ms / 1000
        self._clock = clock
        self._chosen: dict[TopicPartition, tuple[int, float]] = {}  # broker id, expiry

    def choose(self, tp: TopicPartition, broker_id: int) -> None:
        self._chosen[tp] = (broker_id, self._clock() + self.max_age_s)

    def of(self, tp: TopicPartition) -> int | None:
        """The broker to fetch `tp` from instead of its leader; None: the leader."""
        chosen = self._chosen.get(tp)
        if chosen is None:
            return None
        broker_id, expires = chosen
        if self._clock() >= expires:
            del self._chosen[tp]
            return None
        return broker_id

    def forget(self, tp: TopicPartition) -> None:
        self._chosen.pop(tp, None)

"""Which replica a consumer should read a partition from (KIP-392, fetch from the closest
replica), as Kafka's `replica.selector.class` decides it on the partition's leader.

`LeaderSelector` (Kafka's default) always keeps consumers on the leader. `RackAwareReplicaSelector`
sends a consumer whose `client.rack` matches a follower's `broker.rack` to that follower, unless
the leader is in the consumer's rack itself; among several followers there, the most caught-up
one (highest log end offset as the leader last saw it, then the lowest id). Only followers that
can serve the consumer's position are candidates: in the ISR, on an active broker, holding the
fetch offset. The follower then serves only below the high watermark as it knows it, which
trails the leader's by at most one fetch round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LEADER_SELECTOR = "org.apache.kafka.common.replica.LeaderSelector"
RACK_AWARE_SELECTOR = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
REPLICA_SELECTORS = ("", LEADER_SELECTOR, RACK_AWARE_SELECTOR)  # "": Kafka's null, the leader


@dataclass(frozen=True, slots=True)
class FollowerView:
    """What the leader knows of one follower when a consumer fetch arrives."""

    broker_id: int
    rack: str
    log_end_offset: int  # as of the follower's last fetch
    in_sync: bool
    active: bool  # registered, not fenced, not shutting down


def preferred_read_replica(
    selector: str,
    client_rack: str,
    leader_rack: str,
    followers: Iterable[FollowerView],
    fetch_offset: int,
) -> int | None:
    """The follower the consumer should fetch from instead of the leader; None to stay."""
    if selector != RACK_AWARE_SELECTOR or not client_rack or client_rack == leader_rack:
        return None
    candidates = [
        f
        for f in followers
        if f.rack == client_rack and f.in_sync and f.active and f.log_end_offset >= fetch_offset
    ]
    if not candidates:
        return None
    best = max(candidates, key=lambda f: (f.log_end_offset, -f.broker_id))
    return best.broker_id

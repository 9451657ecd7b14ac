"""The replication throttles for partition moves (Kafka's `follower.replication.throttled.rate`
and `leader.replication.throttled.rate`, KIP-73): token buckets of bytes per second, charged only
for the replicas a reassignment is *adding* (KIP-455's moving data), so a move cannot take the
bandwidth producers and in-sync followers need. Ordinary replication is never throttled.

The follower's bucket is shared by every fetcher of the broker adding the replica: when it is
empty, fetchers leave the throttled partitions out of their requests until it refills; a fetch
already in flight may overshoot by one response, which the bucket then owes (Kafka's quotas do
the same). The leader's bucket is shared by every partition the broker leads: when it is empty,
the leader answers a throttled replica's fetch without records (its fetch offset still counts),
as Kafka's leader does for throttled replicas outside the ISR. Both rates are dynamic broker
configs (node/dynamic_config.py): `set_rate` takes a new one.
"""

from __future__ import annotations

UNLIMITED = 9_223_372_036_854_775_807  # Kafka's default: Long.MAX_VALUE


class ReplicationThrottle:
    def __init__(self, bytes_per_s: int, now_ms: int) -> None:
        self.bytes_per_s = bytes_per_s
        self.limited = 0 < bytes_per_s < UNLIMITED
        # At most one second's worth may accumulate: an idle period is not a licence to burst.
        self._tokens = float(bytes_per_s) if self.limited else 0.0
        self._at_ms = now_ms

    def set_rate(self, bytes_per_s: int, now_ms: int) -> None:
        """A new rate (a dynamic broker config): what is owed stays owed, what was saved is
        capped at one second of the new rate."""
        if bytes_per_s == self.bytes_per_s:
            return
        if self.limited:
            self._refill(now_ms)
        was_limited = self.limited
        self.bytes_per_s = bytes_per_s
        self.limited = 0 < bytes_per_s < UNLIMITED
        if not self.limited:
            self._tokens = 0.0
        elif not was_limited:
            self._tokens = float(bytes_per_s)
        else:
            self._tokens = min(self._tokens, float(bytes_per_s))
        self._at_ms = max(self._at_ms, now_ms)

    def _refill(self, now_ms: int) -> None:
        elapsed_s = max(0, now_ms - self._at_ms) / 1000
        self._tokens = min(float(self.bytes_per_s), self._tokens + elapsed_s * self.bytes_per_s)
        self._at_ms = max(self._at_ms, now_ms)

    def allows(self, now_ms: int) -> bool:
        """May throttled partitions be fetched now?"""
        if not self.limited:
            return True
        self._refill(now_ms)
        return self._tokens > 0

    def charge(self, size: int, now_ms: int) -> None:
        if self.limited:
            self._refill(now_ms)
            self._tokens -= size

    def wait_ms(self, now_ms: int) -> int:
        """How long until throttled partitions may be fetched again."""
        if self.allows(now_ms):
            return 0
        return int(-self._tokens * 1000 / self.bytes_per_s) + 1

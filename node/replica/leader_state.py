"""A partition leader's replication decisions: follower progress, ISR, high watermark.

Pure: every input (a follower fetch, the clock, an AlterPartition answer) is a method call with
the time passed in, and every output is a value. The broker's Partition object owns one of these
while it leads and does the I/O around it (DESIGN.md §7, STYLE.md "pure cores").

Rules, as Kafka has them:
- A follower is *caught up* at time t if a fetch at t asked for the leader's log end offset (LEO)
  as of that fetch, or asked at least for the LEO as of its previous fetch (Kafka's
  `lastCaughtUpTimeMs`). It falls out of the ISR when it has not been caught up for
  `replica.lag.time.max.ms`.
- The high watermark is the minimum LEO over the *maximal* ISR: the committed ISR plus members
  whose addition is in flight; members whose removal is in flight still count. So an ISR change
  the controller has not yet committed can never let the HW pass a replica that the committed ISR
  still counts on. The HW never decreases.
- A follower rejoins the ISR only when its broker is active and its LEO has reached both the HW
  and the start offset of the leader's current epoch (so it holds everything this leader wrote).
- At most one ISR change is in flight per partition; the next waits for the answer.
- A new leader knows no follower's LEO (unknown, -1) until they fetch, so its HW cannot move
  until every ISR member has fetched at least once.
- A replica a move is adding may have been removed and deleted its log since it last fetched
  (moved away and back), even if this leader's metadata jumped over the step where it was gone.
  So whenever the assignment (replicas, adding replicas) changes, each adding replica becomes a
  new follower with an unknown LEO, and a fetch it sent from an older view of the partition
  (partition epoch below the change) is not counted: that fetch's offset, delayed in the network
  or parked in a long poll, would let the leader add an empty replica to the ISR and count it
  as holding the HW. The node simulation found this (a move away and back, a fetch in flight).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

UNKNOWN_OFFSET = -1


@dataclass(slots=True)
class FollowerProgress:
    log_end_offset: int = UNKNOWN_OFFSET
    last_fetch_ms: int = -1
    last_caught_up_ms: int = -1
    leader_leo_at_last_fetch: int = UNKNOWN_OFFSET
    broker_epoch: int = -1  # of the follower's last fetch (KIP-903)
    # The partition epoch of the assignment that (re)added this replica while this leader led
    # (-1: it was a replica when this leader began); older fetches are not counted.
    joined_partition_epoch: int = -1


@dataclass(frozen=True, slots=True)
class IsrChange:
    """An ISR the leader wants the controller to commit (AlterPartition).

    `broker_epochs` gives, for each member the leader saw fetch, the broker epoch of those
    fetches (-1 when unknown), so the controller can refuse to add a replica that has since
    restarted, possibly with a shorter log (KIP-903)."""

    new_isr: tuple[int, ...]
    leader_epoch: int
    partition_epoch: int
    broker_epochs: tuple[int, ...] = ()


class LeaderState:
    def __init__(
        self,
        leader_id: int,
        replicas: Iterable[int],
        isr: Iterable[int],
        leader_epoch: int,
        partition_epoch: int,
        epoch_start_offset: int,
        high_watermark: int,
        now_ms: int,
        adding: Iterable[int] = (),
    ) -> None:
        self.leader_id = leader_id
        self.replicas = tuple(replicas)
        self.adding = tuple(adding)
        self.isr = tuple(isr)
        self.leader_epoch = leader_epoch
        self.partition_epoch = partition_epoch
        self.epoch_start_offset = epoch_start_offset
        self.high_watermark = high_watermark
        self.pending: IsrChange | None = None
        # A new leader gives every follower a fresh lag clock: none is thrown out of the ISR for
        # silence that happened before this leader existed.
        self.followers = {
            r: FollowerProgress(
                last_caught_up_ms=now_ms,
                joined_partition_epoch=partition_epoch if r in self.adding else -1,
            )
            for r in self.replicas
            if r != leader_id
        }

    @property
    def maximal_isr(self) -> frozenset[int]:
        members = set(self.isr)
        if self.pending is not None:
            members |= set(self.pending.new_isr)
        return frozenset(members)

    def update_assignment(
        self,
        replicas: Iterable[int],
        isr: Iterable[int],
        partition_epoch: int,
        now_ms: int,
        adding: Iterable[int] = (),
    ) -> None:
        """The committed partition state changed (same leader epoch): take the new ISR; a
        changed assignment starts its adding replicas afresh (see the module's rules)."""
        replicas, adding = tuple(replicas), tuple(adding)
        moved = (replicas, adding) != (self.replicas, self.adding)
        self.replicas, self.adding = replicas, adding
        self.isr = tuple(isr)
        self.partition_epoch = partition_epoch
        self.pending = None
        for r in self.replicas:
            if r != self.leader_id and (r not in self.followers or (moved and r in adding)):
                self.followers[r] = FollowerProgress(
                    last_caught_up_ms=now_ms, joined_partition_epoch=partition_epoch
                )
        for r in list(self.followers):
            if r not in self.replicas:
                del self.followers[r]

    def on_follower_fetch(
        self,
        replica_id: int,
        fetch_offset: int,
        leader_leo: int,
        now_ms: int,
        broker_epoch: int = -1,
        partition_epoch: int = -1,
    ) -> None:
        """Record a follower fetch at `fetch_offset` (the follower's LEO), sent when the
        follower knew the partition at `partition_epoch` (-1: unknown, counted)."""
        progress = self.followers.get(replica_id)
        if progress is None:
            return  # not a replica of this partition (the caller answers the error)
        if 0 <= partition_epoch < progress.joined_partition_epoch:
            return  # sent before this replica was (re)added: its log may be gone since
        if broker_epoch != progress.broker_epoch:
            # A restarted follower: what it held before tells nothing about its log now.
            progress.broker_epoch = broker_epoch
            progress.leader_leo_at_last_fetch = UNKNOWN_OFFSET
        if fetch_offset >= leader_leo:
            progress.last_caught_up_ms = now_ms
        elif fetch_offset >= progress.leader_leo_at_last_fetch >= 0:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        progress.log_end_offset = fetch_offset
        progress.last_fetch_ms = now_ms
        progress.leader_leo_at_last_fetch = leader_leo

    def maybe_advance_high_watermark(self, leader_leo: int) -> bool:
        """Recompute the HW from the maximal ISR; True if it moved (forward only)."""
        candidate = leader_leo
        for member in self.maximal_isr:
            if member == self.leader_id:
                continue
            progress = self.followers.get(member)
            leo = UNKNOWN_OFFSET if progress is None else progress.log_end_offset
            if leo == UNKNOWN_OFFSET:
                return False
            candidate = min(candidate, leo)
        if candidate > self.high_watermark:
            self.high_watermark = candidate
            return True
        return False

    def _propose(self, new_isr: Collection[int]) -> IsrChange:
        ordered = tuple(r for r in self.replicas if r in set(new_isr))
        epochs = tuple(
            self.followers[r].broker_epoch if r in self.followers else -1 for r in ordered
        )
        change = IsrChange(ordered, self.leader_epoch, self.partition_epoch, epochs)
        self.pending = change
        return change

    def maybe_expand_isr(
        self, replica_id: int, active_brokers: Collection[int]
    ) -> IsrChange | None:
        """After a follower fetch: ask to add it if it now holds all the leader has committed."""
        if self.pending is not None or replica_id in self.isr or replica_id not in self.followers:
            return None
        if replica_id not in active_brokers:
            return None
        leo = self.followers[replica_id].log_end_offset
        if leo >= self.high_watermark and leo >= self.epoch_start_offset:
            return self._propose((*self.isr, replica_id))
        return None

    def maybe_shrink_isr(self, now_ms: int, lag_time_max_ms: int) -> IsrChange | None:
        """Ask to drop ISR members that have not caught up for `lag_time_max_ms`."""
        if self.pending is not None:
            return None
        lagging = {
            r
            for r in self.isr
            if r != self.leader_id
            and r in self.followers
            and now_ms - self.followers[r].last_caught_up_ms > lag_time_max_ms
        }
        if not lagging:
            return None
        return self._propose([r for r in self.isr if r not in lagging])

    def on_isr_change_failed(self) -> None:
        """The controller proved the change was not applied: forget it, propose again later.

        Call it only on a refusal that proves it (INELIGIBLE_REPLICA or INVALID_REQUEST, which
        the controller answers only after the partition epoch matched, so no earlier copy of the
        request was applied either; Kafka's rule), or for a change that was never sent. A request
        that timed out, reached a controller that lost leadership, or was refused as stale
        (INVALID_UPDATE_VERSION) may have committed: forgetting an addition then lets the HW pass
        a member the committed ISR holds, which can be elected without acknowledged records
        (issue #14 defect 1; tests/sim/test_replication_sim.py, seed 14). Keep it pending instead
        and let the metadata end it.
        """
        self.pending = None


def diverging_epoch(
    leader_epoch_end: tuple[int, int],
    fetch_offset: int,
    last_fetched_epoch: int,
) -> tuple[int, int] | None:
    """Leader side of KIP-595-style divergence detection in a follower's fetch.

    `leader_epoch_end` is the leader's answer to "end offset of the largest epoch ≤
    last_fetched_epoch" as (epoch, end offset). The follower diverges when that epoch is not the
    one it last fetched, or ends before the follower's log does: it must truncate before it may
    append anything. Returns (epoch, end offset) to send back, or None when the logs agree.
    """
    epoch, end_offset = leader_epoch_end
    if last_fetched_epoch < 0:
        return None  # an empty follower log cannot diverge
    if epoch != last_fetched_epoch or end_offset < fetch_offset:
        return epoch, end_offset
    return None


def truncation_offset(
    diverging: tuple[int, int],
    local_epoch_end: tuple[int, int],
    local_log_end_offset: int,
) -> int:
    """Follower side: where to truncate after the leader reported `diverging` = (epoch, end).

    `local_epoch_end` is the follower's own (largest epoch ≤ diverging epoch, its end offset).
    If the follower has that very epoch, both logs agree up to the smaller end; if it does not
    (its largest epoch below is older), its log agrees with the leader's only up to where that
    older epoch ends locally (KIP-279, the double-failover case).
    """
    _, leader_end = diverging
    _, local_end = local_epoch_end
    # The next fetch carries the epoch the follower then ends with, so if an older divergence
    # remains, the leader reports it again and the follower truncates further: this converges.
    return min(leader_end, local_end, local_log_end_offset)

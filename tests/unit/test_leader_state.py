"""Leader-side ISR and high-watermark rules (DESIGN.md §7)."""

from __future__ import annotations

from strom.node.replica.leader_state import (
    LeaderState,
    diverging_epoch,
    truncation_offset,
)

LAG_MS = 1_000


def leader(hw: int = 0, isr: tuple[int, ...] = (1, 2, 3), start: int = 0) -> LeaderState:
    return LeaderState(1, (1, 2, 3), isr, leader_epoch=5, partition_epoch=0,
                       epoch_start_offset=start, high_watermark=hw, now_ms=0)  # fmt: skip


def test_hw_waits_for_every_isr_member_to_fetch() -> None:
    state = leader()
    state.on_follower_fetch(2, 10, leader_leo=10, now_ms=1)
    assert not state.maybe_advance_high_watermark(10)  # replica 3's LEO is still unknown
    state.on_follower_fetch(3, 7, leader_leo=10, now_ms=1)
    assert state.maybe_advance_high_watermark(10)
    assert state.high_watermark == 7


def test_hw_never_decreases() -> None:
    state = leader(hw=8)
    state.on_follower_fetch(2, 5, leader_leo=10, now_ms=1)
    state.on_follower_fetch(3, 5, leader_leo=10, now_ms=1)
    assert not state.maybe_advance_high_watermark(10)
    assert state.high_watermark == 8


def test_pending_removal_still_counts_for_the_hw() -> None:
    """The maximal ISR: a member whose removal is not yet committed still holds the HW back."""
    state = leader()
    state.on_follower_fetch(2, 10, leader_leo=10, now_ms=1)
    state.on_follower_fetch(3, 4, leader_leo=10, now_ms=1)
    state.on_follower_fetch(2, 10, leader_leo=10, now_ms=2 + LAG_MS)
    change = state.maybe_shrink_isr(now_ms=2 + LAG_MS, lag_time_max_ms=LAG_MS)
    assert change is not None and change.new_isr == (1, 2)
    state.maybe_advance_high_watermark(10)
    assert state.high_watermark == 4  # not 10: replica 3 is still in the committed ISR
    state.update_assignment((1, 2, 3), change.new_isr, partition_epoch=1, now_ms=3 + LAG_MS)
    state.maybe_advance_high_watermark(10)
    assert state.high_watermark == 10


def test_pending_addition_counts_at_once() -> None:
    state = leader(isr=(1, 2))
    state.on_follower_fetch(2, 10, leader_leo=10, now_ms=1)
    state.maybe_advance_high_watermark(10)
    state.on_follower_fetch(3, 10, leader_leo=12, now_ms=2)
    assert state.maybe_expand_isr(3, active_brokers={1, 2, 3}) is not None
    state.maybe_advance_high_watermark(12)
    assert state.high_watermark == 10  # replica 3 (at 10) now holds the HW at 10, not 12


def test_rejoin_needs_hw_epoch_start_and_an_active_broker() -> None:
    state = leader(hw=10, isr=(1, 2), start=15)
    state.on_follower_fetch(3, 12, leader_leo=20, now_ms=1)
    assert state.maybe_expand_isr(3, active_brokers={1, 2, 3}) is None  # below epoch start
    state.on_follower_fetch(3, 16, leader_leo=20, now_ms=2)
    assert state.maybe_expand_isr(3, active_brokers={1, 2}) is None  # fenced
    change = state.maybe_expand_isr(3, active_brokers={1, 2, 3})
    assert change is not None and change.new_isr == (1, 2, 3)
    assert state.maybe_expand_isr(3, active_brokers={1, 2, 3}) is None  # one change in flight


def test_a_follower_that_keeps_up_stays_in_sync() -> None:
    state = leader()
    leo = 0
    for t in range(0, 10 * LAG_MS, 100):
        leo += 5
        # Always one fetch behind the newest append, but at the previous fetch's LEO: caught up.
        state.on_follower_fetch(2, leo - 5, leader_leo=leo, now_ms=t)
        state.on_follower_fetch(3, leo - 5, leader_leo=leo, now_ms=t)
        assert state.maybe_shrink_isr(t, LAG_MS) is None


def test_a_silent_follower_leaves_after_the_lag_time() -> None:
    state = leader()
    state.on_follower_fetch(2, 0, leader_leo=0, now_ms=0)
    state.on_follower_fetch(3, 0, leader_leo=0, now_ms=0)
    for t in range(100, LAG_MS + 1, 100):
        state.on_follower_fetch(2, 10, leader_leo=10, now_ms=t)
        assert state.maybe_shrink_isr(t, LAG_MS) is None
    change = state.maybe_shrink_isr(LAG_MS + 1, LAG_MS)
    assert change is not None and change.new_isr == (1, 2)


def test_divergence_detection_and_truncation() -> None:
    # The follower fetched epoch 3 up to offset 120, but the leader's epoch 3 ended at 100.
    assert diverging_epoch((3, 100), fetch_offset=120, last_fetched_epoch=3) == (3, 100)
    # The leader never had epoch 4; its largest epoch ≤ 4 is 3, ending at 100.
    assert diverging_epoch((3, 100), fetch_offset=90, last_fetched_epoch=4) == (3, 100)
    assert diverging_epoch((3, 100), fetch_offset=90, last_fetched_epoch=3) is None
    assert diverging_epoch((0, 0), fetch_offset=0, last_fetched_epoch=-1) is None
    # Follower has epoch 3 up to 120: truncate to 100.
    assert truncation_offset((3, 100), local_epoch_end=(3, 120), local_log_end_offset=130) == 100
    # KIP-279: follower lacks epoch 3; its epoch 2 ends at 80 locally: truncate to 80.
    assert truncation_offset((3, 100), local_epoch_end=(2, 80), local_log_end_offset=130) == 80


def test_a_fetch_from_before_a_replica_was_moved_away_and_back_is_not_counted() -> None:
    """Replica 3 fetched at 5 (HW 5), was moved off the partition (its log deleted) and back
    as an adding replica. Its old fetch at 5, delayed or parked, arrives after: counting it
    would put an empty replica in the ISR holding the HW. Found by the node simulation."""
    state = leader(isr=(1, 2, 3))
    for follower in (2, 3):
        state.on_follower_fetch(follower, 5, leader_leo=5, now_ms=1, partition_epoch=0)
    assert state.maybe_advance_high_watermark(5) and state.high_watermark == 5
    state.update_assignment((1, 2), (1, 2), partition_epoch=1, now_ms=2)
    state.update_assignment((1, 2, 3), (1, 2), partition_epoch=2, now_ms=3, adding=(3,))
    state.on_follower_fetch(3, 5, leader_leo=5, now_ms=4, partition_epoch=0)  # the old fetch
    assert state.followers[3].log_end_offset == -1
    assert state.maybe_expand_isr(3, {1, 2, 3}) is None
    state.on_follower_fetch(3, 0, leader_leo=5, now_ms=5, partition_epoch=2)  # the new log
    assert state.followers[3].log_end_offset == 0
    assert state.maybe_expand_isr(3, {1, 2, 3}) is None
    state.on_follower_fetch(3, 5, leader_leo=5, now_ms=6, partition_epoch=2)
    change = state.maybe_expand_isr(3, {1, 2, 3})
    assert change is not None and change.new_isr == (1, 2, 3)


def test_a_move_away_and_back_the_leader_never_saw_still_forgets_the_old_position() -> None:
    """The same, when this leader's metadata jumped from 3 in the ISR straight to 3 being
    added again (the step without 3 applied in one delta): the changed assignment is enough."""
    state = leader(isr=(1, 2, 3))
    for follower in (2, 3):
        state.on_follower_fetch(follower, 5, leader_leo=5, now_ms=1, partition_epoch=0)
    state.update_assignment((1, 2, 3), (1, 2), partition_epoch=2, now_ms=3, adding=(3,))
    assert state.followers[3].log_end_offset == -1
    state.on_follower_fetch(3, 5, leader_leo=5, now_ms=4, partition_epoch=1)
    assert state.maybe_expand_isr(3, {1, 2, 3}) is None
    # An ISR change of the same assignment keeps what the adding replica has shown since.
    state.on_follower_fetch(3, 4, leader_leo=5, now_ms=5, partition_epoch=2)
    state.update_assignment((1, 2, 3), (1,), partition_epoch=3, now_ms=6, adding=(3,))
    assert state.followers[3].log_end_offset == 4

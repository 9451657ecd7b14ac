"""How long the Raft simulator's heal phase may take (raft_sim.py `_heal`), from the protocol's
timing, as pure functions.

Once healed, faults stop, every node is up, a hop takes at most `hop_units_max` (E/5 ticks,
where E is the election timeout: Raft §5.6 wants broadcast time << election timeout) and a
node's Ready at most `sync_units_max`. The heal has two phases with a bound each:

1. `commit_ticks_max`: a leader commits a fresh proposal and every node's commit index covers
   it. This is where a stuck node shows: a leader that never emerges, a follower never caught
   up, a transfer never abandoned.
2. `apply_ticks_max`: every node applies through that proposal. A node restarted late in a long
   run re-applies its whole log since its last snapshot, thousands of entries when nothing was
   compacted; that is slow, not stuck, and has its own bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strom.raft.log import RaftLog

ELECTION_ROUNDS_MAX = 10
"""Election rounds allowed after the heal. A round is lost to chance (a split vote, or a node
with a stale log timing out first, Raft §5.4.1), so the allowance is a count of rounds that all
failing is negligible. Measured over seeds 300000-305999 (500 events each), 2,840 heals needed
an election: the first leader came within 4.4 E in every one of them, and each further E of
waiting was 5 to 12 times rarer than the one before. Ten rounds allow at least 20 E."""


@dataclass(frozen=True)
class HealTiming:
    """What the heal bounds depend on, once faults are off."""

    tick_units: int
    election_timeout_ticks: int
    hop_units_max: int
    sync_units_max: int
    inflight_msgs_max: int
    entries_per_msg: int
    """The fewest entries a full AppendRequest carries (at least one, however large)."""


def round_trip_ticks(t: HealTiming) -> int:
    """The longest request/response round trip, in ticks (rounded up): the sender's Ready in
    flight (a message leaves only at its next `ready()`), one hop, the receiver's Ready in flight
    and then the Ready that persists before answering (AppendResponse and VoteResponse wait for
    the sync), and the hop back. At most E ticks, since a hop is E/5 ticks and a sync no more."""
    units = 2 * t.hop_units_max + 3 * t.sync_units_max
    return -(-units // t.tick_units)


def commit_ticks_max(t: HealTiming, logs: Sequence[RaftLog]) -> int:
    """Phase 1, the sum of (E: election timeout, R: `round_trip_ticks`):

    1. Old roles wind down, 2E: a leader that lost its quorum steps down at its second
       check-quorum round at the latest (a round every E ticks looks at the previous E; thesis
       §6.2); a pending leadership transfer is abandoned E ticks after it began (thesis §3.10,
       testdata/leadership_transfer_abandoned.txt); a follower's lease lasts E after its last
       heartbeat.
    2. Elections, ELECTION_ROUNDS_MAX rounds of 2E + 2R: a timeout drawn from [E, 2E) (Raft
       §5.2), then a pre-vote round trip (thesis §9.6) and a vote round trip.
    3. Catch-up, in round trips of R + 1 (the extra tick: a paused probe resumes on the next
       heartbeat response): probing back to where the logs match, one round per term above
       the lowest commit index, since the rejection's conflict-term hint skips a whole term
       (§5.3), plus the new leader's own term; one snapshot install; streaming the backlog at
       `inflight_msgs_max` messages per round trip; one round to commit the new proposals on a
       quorum and one to carry the commit index to every follower.
    """
    e = t.election_timeout_ticks
    rtt = round_trip_ticks(t)
    committed = min(log.committed for log in logs)
    backlog = max(log.last_index() for log in logs) - committed
    divergent_terms = {
        log.term(i)
        for log in logs
        for i in range(max(committed + 1, log.first_index()), log.last_index() + 1)
    }
    probe_rounds = len(divergent_terms) + 1
    stream_rounds = -(-backlog // (t.inflight_msgs_max * t.entries_per_msg))
    catch_up_rounds = probe_rounds + 1 + stream_rounds + 2
    return 2 * e + ELECTION_ROUNDS_MAX * (2 * e + 2 * rtt) + catch_up_rounds * (rtt + 1)


def apply_ticks_max(t: HealTiming, behind: int) -> int:
    """Phase 2: the most entries a node still has to apply is `behind`. A node applies in
    Readies back to back (the simulator drives the next one when a sync completes), each taking
    at most one sync and carrying at least one committed entry (`committed_bytes_per_ready_max`
    pages them; the simulator sets it to `msg_bytes_max`, as small as 40 bytes, so often exactly
    one); the Ready already in flight may carry none."""
    return -(-(behind + 1) * t.sync_units_max // t.tick_units)

"""The Raft state machine: one node's roles, elections, replication and commitment.

Sans-I/O (etcd-io/raft's raft.go): inputs are `step(message)`, `tick()`, `propose(data)`,
`campaign()`, `transfer_leadership(to)` and the persistence hooks the RawNode calls from
`advance`; outputs are the messages queued in `msgs` (send now) and `msgs_after_persist` (send
once the current hard state and entries are durable), and the log's unstable tail.

Roles (one `_step_<role>` function each) and their transitions:

    from            event                                                    to
    follower        election timeout, pre_vote on                            pre-candidate
    follower        election timeout, pre_vote off; TimeoutNow from leader   candidate
    pre-candidate   pre-votes granted by a quorum                            candidate
    pre-candidate   pre-votes rejected by a quorum                           follower
    pre-candidate   election timeout                                         pre-candidate
    candidate       votes granted by a quorum (own vote counted once durable) leader
    candidate       votes rejected by a quorum                               follower
    candidate       election timeout                                         pre-candidate / candidate
    (pre-)candidate Append/Heartbeat/InstallSnapshot of the current term     follower
    leader          no quorum heard within an election timeout (check_quorum) follower
    any             message of a higher term (except lease-ignored votes
                    and granted pre-vote responses)                          follower

Safety rules kept here (cited from the Raft paper, "Raft §", and Ongaro's thesis, "thesis §"):
- one vote per term, persisted before the VoteResponse is sent (§5.2);
- votes only for candidates whose log is at least as up to date (§5.4.1);
- a leader commits only entries of its own term by counting replicas (§5.4.2), and counts its
  own log only up to what it has persisted (thesis §10.2.1);
- a new leader appends a no-op of its term (§8);
- followers that heard from a leader within an election timeout ignore (pre-)votes, and leaders
  without a recently active quorum step down (check_quorum, thesis §6.2, §9.6);
- messages from stale terms, non-voters, or with impossible indexes change nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .config import Config
from .errors import CompactedError, NotLeader, ProposalDropped, RaftError
from .log import RaftLog
from .progress import Progress, ProgressState
from .quorum import VoteResult, committed_index, majority, vote_result
from .storage import Storage
from .types import (
    NONE,
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    HeartbeatRequest,
    HeartbeatResponse,
    InstallSnapshotRequest,
    Message,
    Role,
    Snapshot,
    TimeoutNowRequest,
    VoteRequest,
    VoteResponse,
)
from .validate import is_well_formed

_LEADER_TO_FOLLOWER = (AppendRequest, HeartbeatRequest, InstallSnapshotRequest)


class UnknownNodeError(RaftError):
    """A request named a node that is not a voter."""


class Raft:
    def __init__(self, config: Config, storage: Storage, rand_int: Callable[[int], int]) -> None:
        config.validate()
        self.config = config
        self.id = config.node_id
        self.voters = tuple(sorted(config.voters))
        self.peers = tuple(v for v in self.voters if v != self.id)
        self._rand_int = rand_int
        self.log = RaftLog(storage, config.applied)
        hard = storage.initial_state()
        self.term = hard.term
        self.vote = hard.vote
        self.role = Role.FOLLOWER
        self.leader_id = NONE
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.randomized_election_timeout_ticks = config.election_timeout_ticks
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.lead_transferee = NONE
        # (index, size) of this leader's uncommitted proposals, to bound uncommitted bytes.
        self._uncommitted: deque[tuple[int, int]] = deque()
        self.uncommitted_bytes = 0
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self.dropped_msgs = 0
        self._become_follower(self.term, NONE)

    # ---- public inputs ----

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def step(self, m: Message) -> None:
        """Handle one message from a peer. Malformed, misaddressed or stale ones are dropped."""
        if not is_well_formed(m, self.id, self.voters):
            self.dropped_msgs += 1
            return
        if m.term > self.term:
            if isinstance(m, VoteRequest) and not m.leadership_transfer and self._in_lease():
                # Thesis §6.2 leader lease: a live leader exists, so do not let this
                # candidate raise our term or win our vote.
                return
            if isinstance(m, VoteRequest) and m.pre_vote:
                pass  # a pre-vote never changes our term
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass  # we bump our term only once a quorum granted
            else:
                leader = m.from_id if isinstance(m, _LEADER_TO_FOLLOWER) else NONE
                self._become_follower(m.term, leader)
        elif m.term < self.term:
            self._reply_to_stale(m)
            return
        if isinstance(m, VoteRequest):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed_ticks += 1
            if self.election_elapsed_ticks >= self.randomized_election_timeout_ticks:
                self.election_elapsed_ticks = 0
                self.campaign()

    def propose(self, data: bytes) -> int:
        """Append `data` as a new entry at the leader; returns its index."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.id, self.leader_id)
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is moving to node {self.lead_transferee}")
        entry = Entry(self.term, self.log.last_index() + 1, EntryKind.NORMAL, data)
        size = entry.size_bytes()
        if self.uncommitted_bytes + size > self.config.uncommitted_bytes_max and self._uncommitted:
            raise ProposalDropped(
                f"{self.uncommitted_bytes} uncommitted bytes (uncommitted_bytes_max "
                f"{self.config.uncommitted_bytes_max}); retry once entries commit"
            )
        self._append_entry(entry)
        self._bcast_append()
        return entry.index

    def campaign(self, transfer: bool = False) -> None:
        """Start an election (pre-vote first unless disabled or this is a transfer)."""
        if self.role is Role.LEADER:
            return
        self._campaign(pre=self.config.pre_vote and not transfer, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self._become_pre_candidate()
            self.votes[self.id] = True  # a pre-vote changes nothing durable
            vote_term = self.term + 1
        else:
            self._become_candidate()
            vote_term = self.term  # our own vote counts once it is durable (on_persisted_*)
        if self._tally() is VoteResult.WON:
            self._campaign(pre=False)  # a one-voter cluster wins its pre-vote alone
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for peer in self.peers:
            self._send(VoteRequest(vote_term, self.id, peer, last_index, last_term, pre, transfer))

    def transfer_leadership(self, to_id: int) -> None:
        """Thesis §3.10: bring `to_id` up to date, then tell it to campaign (TimeoutNow)."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.id, self.leader_id)
        if to_id not in self.voters:
            raise UnknownNodeError(f"node {to_id} is not a voter {self.voters}")
        if to_id == self.id or to_id == self.lead_transferee:
            return
        self.lead_transferee = to_id
        # The transfer must finish within an election timeout (see _tick_leader).
        self.election_elapsed_ticks = 0
        if self.progress[to_id].match == self.log.last_index():
            self._send(TimeoutNowRequest(self.term, self.id, to_id))
        else:
            self._maybe_send_append(to_id)

    # ---- persistence hooks (called by RawNode.advance) ----

    def on_persisted_entries(self, index: int, term: int) -> None:
        """Entries up to (index, term) are durable: a leader may now count its own copy."""
        if self.role is Role.LEADER and self.log.match_term(index, term):
            self._on_ack(self.id, index)

    def on_persisted_hard_state(self, hard: HardState) -> None:
        """A candidate's self-vote counts only once durable (Raft §5.2, one vote per term)."""
        if self.role is Role.CANDIDATE and hard.term == self.term and hard.vote == self.id:
            self.votes[self.id] = True
            if self._tally() is VoteResult.WON:
                self._become_leader()

    # ---- role transitions ----

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader_id = NONE
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        base = self.config.election_timeout_ticks
        self.randomized_election_timeout_ticks = base + self._rand_int(base)
        self.lead_transferee = NONE
        self.votes = {}
        self.progress = {}
        self._uncommitted.clear()
        self.uncommitted_bytes = 0

    def _become_follower(self, term: int, leader_id: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader_id

    def _become_pre_candidate(self) -> None:
        # Keeps term and vote: a failed pre-vote leaves no trace (thesis §9.6).
        self.votes = {}
        self.progress = {}
        self.leader_id = NONE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        next_index = self.log.last_index() + 1
        for voter in self.voters:
            self.progress[voter] = Progress(next_index, self.config.inflight_msgs_max)
        me = self.progress[self.id]
        me.become_replicate()
        me.recent_active = True
        # Raft §8: commit a no-op of our term so earlier entries commit with it (§5.4.2).
        self._append_entry(Entry(self.term, next_index, EntryKind.NOOP))
        self._bcast_append()

    # ---- elections ----

    def _in_lease(self) -> bool:
        return (
            self.config.check_quorum
            and self.leader_id != NONE
            and self.election_elapsed_ticks < self.config.election_timeout_ticks
        )

    def _reply_to_stale(self, m: Message) -> None:
        if isinstance(m, AppendRequest | HeartbeatRequest) and (
            self.config.check_quorum or self.config.pre_vote
        ):
            # A deposed leader learns our term and steps down; without this a leader cut off
            # by pre-vote/check-quorum could keep sending forever.
            self._send(AppendResponse(self.term, self.id, m.from_id, False, 0))
        elif isinstance(m, VoteRequest) and m.pre_vote:
            self._send(VoteResponse(self.term, self.id, m.from_id, False, True))
        else:
            self.dropped_msgs += 1

    def _can_vote_for(self, m: VoteRequest) -> bool:
        """Raft §5.2: at most one vote per term (pre-votes are not votes)."""
        return (
            self.vote == m.from_id
            or (self.vote == NONE and self.leader_id == NONE)
            or (m.pre_vote and m.term > self.term)
        )

    def _handle_vote_request(self, m: VoteRequest) -> None:
        if self._can_vote_for(m) and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            # A granted pre-vote answers in the pre-vote's term so the pre-candidate counts it.
            self._send(VoteResponse(m.term, self.id, m.from_id, True, m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed_ticks = 0
                self.vote = m.from_id
        else:
            self._send(VoteResponse(self.term, self.id, m.from_id, False, m.pre_vote))

    def _tally(self) -> VoteResult:
        return vote_result(self.voters, self.votes)

    # ---- role step functions ----

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, _LEADER_TO_FOLLOWER):
            self.election_elapsed_ticks = 0
            self.leader_id = m.from_id
            self._handle_from_leader(m)
        elif isinstance(m, TimeoutNowRequest):
            self.campaign(transfer=True)

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, _LEADER_TO_FOLLOWER):
            self._become_follower(self.term, m.from_id)
            self._handle_from_leader(m)
        elif isinstance(m, VoteResponse):
            pre = self.role is Role.PRE_CANDIDATE
            if m.pre_vote != pre or m.term != self.term + (1 if pre else 0):
                return  # a response to an earlier round
            self.votes.setdefault(m.from_id, m.granted)
            result = self._tally()
            if result is VoteResult.WON and pre:
                self._campaign(pre=False)
            elif result is VoteResult.WON:
                self._become_leader()
            elif result is VoteResult.LOST:
                self._become_follower(self.term, NONE)

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendResponse):
            if m.index > self.log.last_index():
                self.dropped_msgs += 1  # acknowledges entries we never had
                return
            self.progress[m.from_id].recent_active = True
            if m.success:
                self._on_ack(m.from_id, m.index)
            else:
                self._on_reject(m)
        elif isinstance(m, HeartbeatResponse):
            pr = self.progress[m.from_id]
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.is_paused():
                # Free one slot: if appends were lost, the next one is rejected (it leaves a
                # gap) and the follower falls back to probing instead of stalling forever.
                pr.inflights.popleft()
            if pr.match < self.log.last_index():
                self._maybe_send_append(m.from_id)

    # ---- follower side of replication ----

    def _handle_from_leader(
        self, m: AppendRequest | HeartbeatRequest | InstallSnapshotRequest
    ) -> None:
        if isinstance(m, AppendRequest):
            self._handle_append(m)
        elif isinstance(m, HeartbeatRequest):
            # The leader sends min(our match, its commit): a prefix we share (Raft §5.3).
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(HeartbeatResponse(self.term, self.id, m.from_id))
        else:
            self._handle_snapshot(m)

    def _handle_append(self, m: AppendRequest) -> None:
        committed = self.log.committed
        if m.prev_log_index < committed:
            self._send(AppendResponse(self.term, self.id, m.from_id, True, committed))
            return
        last_new = self.log.maybe_append(
            m.prev_log_index, m.prev_log_term, m.leader_commit, m.entries
        )
        if last_new is not None:
            self._send(AppendResponse(self.term, self.id, m.from_id, True, last_new))
            return
        hint = min(m.prev_log_index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint, m.prev_log_term)
        self._send(
            AppendResponse(
                self.term, self.id, m.from_id, False, m.prev_log_index, hint_index, hint_term
            )
        )

    def _handle_snapshot(self, m: InstallSnapshotRequest) -> None:
        snap = m.snapshot
        if snap.index <= self.log.committed:
            index = self.log.committed
        elif self.log.match_term(snap.index, snap.term):
            self.log.commit_to(snap.index)  # we already hold that prefix
            index = snap.index
        else:
            self.log.restore(snap)  # Raft §7: discard the whole log
            index = snap.index
        self._send(AppendResponse(self.term, self.id, m.from_id, True, index))

    # ---- leader side of replication ----

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed_ticks += 1
        self.election_elapsed_ticks += 1
        timeout = self.config.election_timeout_ticks
        for pr in self.progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_elapsed_ticks += 1
                if pr.snapshot_elapsed_ticks >= timeout:
                    pr.become_probe()  # the snapshot (or its answer) was lost: re-send
        if self.election_elapsed_ticks >= timeout:
            self.election_elapsed_ticks = 0
            if self.config.check_quorum:
                active = sum(1 for pr in self.progress.values() if pr.recent_active)
                if active < majority(len(self.voters)):
                    self._become_follower(self.term, NONE)
                    return
                for voter, pr in self.progress.items():
                    pr.recent_active = voter == self.id
            self.lead_transferee = NONE  # a transfer not done within a timeout is abandoned
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks:
            self.heartbeat_elapsed_ticks = 0
            for peer in self.peers:
                pr = self.progress[peer]
                commit = min(pr.match, self.log.committed)
                self._send(HeartbeatRequest(self.term, self.id, peer, commit))

    def _append_entry(self, entry: Entry) -> None:
        self.log.append([entry])
        size = entry.size_bytes()
        self._uncommitted.append((entry.index, size))
        self.uncommitted_bytes += size

    def _on_ack(self, node_id: int, index: int) -> None:
        pr = self.progress[node_id]
        if not pr.maybe_update(index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            self._bcast_append()
        elif node_id != self.id:
            while self._maybe_send_append(node_id, send_empty=False):
                pass
        if node_id == self.lead_transferee and pr.match == self.log.last_index():
            self._send(TimeoutNowRequest(self.term, self.id, node_id))

    def _on_reject(self, m: AppendResponse) -> None:
        pr = self.progress[m.from_id]
        probe = m.hint_index
        if m.hint_term > 0:
            probe, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
        if pr.maybe_decrease_to(m.index, probe):
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            self._maybe_send_append(m.from_id)

    def _maybe_commit(self) -> bool:
        """Raft §5.4.2: commit the quorum's match index only if it is an entry of our term."""
        index = self._quorum_match_index()
        if index <= self.log.committed or self.log.term(index) != self.term:
            return False
        self._commit_to(index)
        return True

    def _quorum_match_index(self) -> int:
        return committed_index(self.voters, {v: pr.match for v, pr in self.progress.items()})

    def _commit_to(self, index: int) -> None:
        self.log.commit_to(index)
        while self._uncommitted and self._uncommitted[0][0] <= index:
            self.uncommitted_bytes -= self._uncommitted.popleft()[1]

    def _bcast_append(self) -> None:
        for peer in self.peers:
            self._maybe_send_append(peer)

    def _maybe_send_append(self, to_id: int, send_empty: bool = True) -> bool:
        pr = self.progress[to_id]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        try:
            if prev_term is None:
                raise CompactedError(f"prev index {prev_index} compacted")
            hi = min(self.log.last_index() + 1, pr.next + self.config.entries_per_msg_max)
            entries = self.log.slice(pr.next, hi, self.config.msg_bytes_max)
        except CompactedError:
            return self._maybe_send_snapshot(to_id, pr)
        if not entries and not send_empty:
            return False
        msg = AppendRequest(
            self.term, self.id, to_id, prev_index, prev_term, tuple(entries), self.log.committed
        )
        self._send(msg)
        pr.sent_append(entries[-1].index if entries else prev_index, len(entries))
        return True

    def _maybe_send_snapshot(self, to_id: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a follower that may be down
        snap: Snapshot = self.log.unstable_snapshot or self.log.storage.snapshot()
        self._send(InstallSnapshotRequest(self.term, self.id, to_id, snap))
        pr.become_snapshot(snap.index)
        return True

    # ---- output ----

    def _send(self, m: Message) -> None:
        # Responses promise durable state (a vote, stored entries): they wait for the fsync.
        if isinstance(m, AppendResponse | VoteResponse):
            self.msgs_after_persist.append(m)
        else:
            self.msgs.append(m)

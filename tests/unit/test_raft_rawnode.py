"""RawNode's Ready contract: what goes out now, what waits for the fsync, when own votes and
own log count (Raft §5.1/§5.2, thesis §10.2.1), and compaction through Ready (Raft §7)."""

from __future__ import annotations

from strom.raft import (
    AppendRequest,
    AppendResponse,
    Config,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    RawNode,
    Role,
    Snapshot,
    VoteRequest,
    VoteResponse,
)


def _node(node_id: int, voters: tuple[int, ...], **kw: bool) -> tuple[RawNode, MemoryStorage]:
    store = MemoryStorage()
    return RawNode(Config(node_id=node_id, voters=voters, **kw), store, lambda n: 0), store


def test_candidate_counts_its_own_vote_only_once_persisted() -> None:
    node, _ = _node(1, (1, 2, 3), pre_vote=False)
    node.campaign()
    rd = node.ready()
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert {type(m) for m in rd.messages} == {VoteRequest}
    assert rd.persisted_messages == ()
    node.step(VoteResponse(1, 2, 1, True))
    assert node.raft.role is Role.CANDIDATE  # one grant, own vote not yet durable
    node.advance(rd)
    assert node.raft.role is Role.LEADER


def test_follower_acknowledges_entries_only_after_persisting() -> None:
    node, store = _node(2, (1, 2, 3))
    node.step(AppendRequest(1, 1, 2, 0, 0, (Entry(1, 1, EntryKind.NOOP),), 0))
    rd = node.ready()
    assert rd.entries == (Entry(1, 1, EntryKind.NOOP),)
    assert rd.truncate_from_index == 1
    assert rd.messages == ()
    assert rd.persisted_messages == (AppendResponse(1, 2, 1, True, 1),)
    assert not node.has_ready()  # one Ready at a time
    store.append(list(rd.entries))
    node.advance(rd)


def test_leader_counts_its_own_log_only_once_persisted() -> None:
    node, store = _node(1, (1,))
    node.campaign()
    while node.has_ready():
        rd = node.ready()
        store.append(list(rd.entries))
        if rd.hard_state:
            store.set_hard_state(rd.hard_state)
        node.advance(rd)
    assert node.raft.role is Role.LEADER
    index = node.propose(b"a")
    rd = node.ready()
    assert [e.index for e in rd.entries] == [index]
    assert rd.committed_entries == ()  # not durable yet, so not committed
    store.append(list(rd.entries))
    node.advance(rd)
    rd = node.ready()
    assert [e.data for e in rd.committed_entries] == [b"a"]
    assert rd.hard_state is not None and rd.hard_state.commit == index
    node.advance(rd)


def test_compaction_goes_through_ready() -> None:
    node, store = _node(1, (1,))
    node.campaign()
    for _ in range(3):
        while node.has_ready():
            rd = node.ready()
            store.append(list(rd.entries))
            if rd.hard_state:
                store.set_hard_state(rd.hard_state)
            node.advance(rd)
        node.propose(b"x")
    applied = node.raft.log.applied
    node.compact(applied, b"state")
    rd = node.ready()
    assert rd.compaction == Snapshot(applied, node.raft.term, b"state")
    store.append(list(rd.entries))
    store.compact(rd.compaction)
    node.advance(rd)
    assert node.raft.log.first_index() == applied + 1
    assert store.snapshot().data == b"state"

"""Bad input to the Raft core changes nothing (Raft §5.1: stale terms are rejected; messages
from unknown nodes or with impossible indexes are dropped) and bad configs are refused."""

from __future__ import annotations

import pytest

from strom.raft import (
    AppendRequest,
    AppendResponse,
    Config,
    ConfigError,
    Entry,
    HeartbeatRequest,
    InstallSnapshotRequest,
    MemoryStorage,
    Message,
    NotLeader,
    RaftError,
    RawNode,
    Ready,
    Role,
    Snapshot,
    VoteRequest,
    VoteResponse,
)


def _persist(store: MemoryStorage, rd: Ready) -> None:
    if rd.snapshot is not None:
        store.install_snapshot(rd.snapshot)
    store.append(list(rd.entries))
    if rd.compaction is not None:
        store.compact(rd.compaction)
    if rd.hard_state is not None:
        store.set_hard_state(rd.hard_state)


def _drain(node: RawNode, store: MemoryStorage) -> list[Message]:
    sent: list[Message] = []
    while node.has_ready():
        rd = node.ready()
        _persist(store, rd)
        sent += [*rd.messages, *rd.persisted_messages]
        node.advance(rd)
    return sent


def _follower_at_term_2() -> tuple[RawNode, MemoryStorage]:
    """Node 2 of {1, 2, 3}, following leader 1 in term 2 with log [1@1, 2@2]."""
    store = MemoryStorage()
    node = RawNode(Config(node_id=2, voters=(1, 2, 3)), store, lambda n: 0)
    node.step(AppendRequest(2, 1, 2, 0, 0, (Entry(1, 1), Entry(2, 2)), 1))
    _drain(node, store)
    return node, store


def _fingerprint(node: RawNode) -> tuple[object, ...]:
    raft = node.raft
    return (
        raft.term,
        raft.vote,
        raft.role,
        raft.leader_id,
        raft.log.committed,
        raft.log.last_index(),
    )


BAD: list[tuple[str, Message]] = [
    ("unknown sender", AppendRequest(2, 9, 2, 2, 2, (Entry(2, 3),), 3)),
    ("not addressed to us", AppendRequest(2, 1, 3, 2, 2, (Entry(2, 3),), 3)),
    ("from ourselves", VoteRequest(5, 2, 2, 9, 5)),
    ("term zero", HeartbeatRequest(0, 1, 2, 0)),
    ("negative prev index", AppendRequest(2, 1, 2, -1, 0, (), 0)),
    ("gap in entries", AppendRequest(2, 1, 2, 2, 2, (Entry(2, 4),), 2)),
    ("entry term above message term", AppendRequest(2, 1, 2, 2, 2, (Entry(3, 3),), 2)),
    ("entry term going back", AppendRequest(2, 1, 2, 2, 2, (Entry(1, 3),), 2)),
    ("entry term zero", AppendRequest(2, 1, 2, 0, 0, (Entry(0, 1),), 0)),
    ("prev term on index 0", AppendRequest(2, 1, 2, 0, 1, (), 0)),
    ("negative commit", HeartbeatRequest(2, 1, 2, -5)),
    ("vote last term above term", VoteRequest(3, 3, 2, 5, 4)),
    ("empty snapshot", InstallSnapshotRequest(2, 1, 2, Snapshot(0, 0, b""))),
    ("snapshot term above message term", InstallSnapshotRequest(2, 1, 2, Snapshot(9, 3, b""))),
    ("hint above index", AppendResponse(2, 3, 2, False, 1, 5, 1)),
]


@pytest.mark.parametrize(("why", "message"), BAD, ids=[b[0] for b in BAD])
def test_impossible_messages_are_dropped(why: str, message: Message) -> None:
    node, store = _follower_at_term_2()
    before = _fingerprint(node)
    node.step(message)
    assert _fingerprint(node) == before, why
    assert _drain(node, store) == []
    assert node.raft.dropped_msgs == 1


def test_stale_term_append_is_rejected_with_our_term() -> None:
    """Raft §5.1: a stale leader learns the newer term and steps down."""
    node, store = _follower_at_term_2()
    before = _fingerprint(node)
    node.step(AppendRequest(1, 3, 2, 1, 1, (Entry(1, 2),), 1))
    assert _fingerprint(node) == before
    assert _drain(node, store) == [AppendResponse(2, 2, 3, False, 0)]


def test_stale_vote_is_ignored_and_stale_pre_vote_rejected() -> None:
    node, store = _follower_at_term_2()
    node.step(VoteRequest(1, 3, 2, 9, 1))
    assert _drain(node, store) == []
    node.step(VoteRequest(2, 3, 2, 9, 2, pre_vote=True))  # pre-vote for term 2 = ours: stale
    assert _drain(node, store) == [VoteResponse(2, 2, 3, False, True)]
    assert node.raft.vote == 0


def test_append_conflicting_with_committed_prefix_is_answered_not_applied() -> None:
    """prev_log_index below our commit: acknowledge the commit, change nothing."""
    node, store = _follower_at_term_2()
    node.step(AppendRequest(2, 1, 2, 0, 0, (Entry(2, 1),), 1))
    assert _drain(node, store) == [AppendResponse(2, 2, 1, True, 1)]
    assert store.term(1) == 1


def test_leader_ignores_acks_beyond_its_log() -> None:
    store = MemoryStorage()
    node = RawNode(Config(node_id=1, voters=(1,)), store, lambda n: 0)
    node.campaign()
    _drain(node, store)
    assert node.raft.role is Role.LEADER
    # A voter set of one has no peers; use a three-node leader instead.
    store = MemoryStorage()
    node = RawNode(Config(node_id=1, voters=(1, 2, 3)), store, lambda n: 0)
    node.campaign()
    _drain(node, store)
    for voter in (2, 3):
        node.step(VoteResponse(1, voter, 1, True, True))
    _drain(node, store)
    for voter in (2, 3):
        node.step(VoteResponse(1, voter, 1, True))
    _drain(node, store)
    assert node.raft.role is Role.LEADER
    before = _fingerprint(node)
    node.step(AppendResponse(1, 2, 1, True, 99))
    assert _fingerprint(node) == before
    assert node.raft.progress[2].match == 0


def test_propose_on_follower_names_the_leader() -> None:
    node, _ = _follower_at_term_2()
    with pytest.raises(NotLeader) as err:
        node.propose(b"x")
    assert err.value.leader_id == 1


def test_compact_beyond_applied_is_refused() -> None:
    node, _ = _follower_at_term_2()
    with pytest.raises(RaftError):
        node.compact(5, b"")


@pytest.mark.parametrize(
    "config",
    [
        Config(node_id=0, voters=(1,)),
        Config(node_id=1, voters=(2, 3)),
        Config(node_id=1, voters=(1, 1)),
        Config(node_id=1, voters=(1,), election_timeout_ticks=2, heartbeat_interval_ticks=2),
        Config(node_id=1, voters=(1,), inflight_msgs_max=0),
    ],
)
def test_bad_configs_are_refused(config: Config) -> None:
    with pytest.raises(ConfigError):
        RawNode(config, MemoryStorage())

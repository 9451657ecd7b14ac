"""Every Raft core message survives the protobuf mapping unchanged."""

from __future__ import annotations

import pytest

from strom.node.quorum.codec import message_from_proto, message_to_proto
from strom.raft import types as rt
from strom.v1 import raft_pb2

ENTRIES = (rt.Entry(3, 7, rt.EntryKind.NOOP), rt.Entry(3, 8, rt.EntryKind.NORMAL, b"\x00data"))

MESSAGES: list[rt.Message] = [
    rt.VoteRequest(5, 1, 2, 10, 4, pre_vote=True, leadership_transfer=True),
    rt.VoteResponse(5, 2, 1, granted=True, pre_vote=True),
    rt.AppendRequest(5, 1, 3, 6, 2, ENTRIES, 6),
    rt.AppendRequest(5, 1, 3, 0, 0, (), 0),
    rt.AppendResponse(5, 3, 1, success=False, index=6, hint_index=4, hint_term=2),
    rt.HeartbeatRequest(5, 1, 2, 9),
    rt.HeartbeatResponse(5, 2, 1),
    rt.InstallSnapshotRequest(5, 1, 2, rt.Snapshot(100, 4, b"image")),
    rt.TimeoutNowRequest(6, 1, 3),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: rt.Message) -> None:
    wire = message_to_proto(message).SerializeToString()
    assert message_from_proto(raft_pb2.RaftMessage.FromString(wire)) == message


def test_every_message_type_is_mapped() -> None:
    assert {type(m) for m in MESSAGES} == set(rt.Message.__args__)  # type: ignore[attr-defined]


def test_empty_message_is_refused() -> None:
    with pytest.raises(ValueError, match="empty Raft message"):
        message_from_proto(raft_pb2.RaftMessage())

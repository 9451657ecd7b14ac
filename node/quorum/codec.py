"""Raft core values <-> protobuf. Each message class of `strom.raft.types` maps field for field
onto the message of the same name in raft.proto, so the codec is one table and two loops."""

from __future__ import annotations

import dataclasses
from typing import Any

from strom.raft import types as rt
from strom.v1 import raft_pb2

_FIELD_BY_CLASS: dict[type, str] = {
    rt.VoteRequest: "vote_request",
    rt.VoteResponse: "vote_response",
    rt.AppendRequest: "append_request",
    rt.AppendResponse: "append_response",
    rt.HeartbeatRequest: "heartbeat_request",
    rt.HeartbeatResponse: "heartbeat_response",
    rt.InstallSnapshotRequest: "install_snapshot_request",
    rt.TimeoutNowRequest: "timeout_now_request",
}
_CLASS_BY_FIELD = {name: cls for cls, name in _FIELD_BY_CLASS.items()}


def entry_to_proto(entry: rt.Entry) -> raft_pb2.RaftEntry:
    return raft_pb2.RaftEntry(
        term=entry.term, index=entry.index, kind=int(entry.kind), data=entry.data
    )


def entry_from_proto(entry: raft_pb2.RaftEntry) -> rt.Entry:
    return rt.Entry(entry.term, entry.index, rt.EntryKind(entry.kind), entry.data)


def snapshot_to_proto(snapshot: rt.Snapshot) -> raft_pb2.RaftSnapshot:
    return raft_pb2.RaftSnapshot(index=snapshot.index, term=snapshot.term, data=snapshot.data)


def snapshot_from_proto(snapshot: raft_pb2.RaftSnapshot) -> rt.Snapshot:
    return rt.Snapshot(snapshot.index, snapshot.term, snapshot.data)


def message_to_proto(message: rt.Message) -> raft_pb2.RaftMessage:
    name = _FIELD_BY_CLASS[type(message)]
    wrapper = raft_pb2.RaftMessage()
    target = getattr(wrapper, name)
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        if field.name == "entries":
            target.entries.extend(entry_to_proto(e) for e in value)
        elif field.name == "snapshot":
            target.snapshot.CopyFrom(snapshot_to_proto(value))
        else:
            setattr(target, field.name, value)
    return wrapper


def message_from_proto(wrapper: raft_pb2.RaftMessage) -> rt.Message:
    """Raises ValueError for an empty or unknown message (the caller answers INVALID_REQUEST)."""
    name = wrapper.WhichOneof("message")
    if name is None:
        raise ValueError("empty Raft message")
    cls = _CLASS_BY_FIELD[name]
    source = getattr(wrapper, name)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name == "entries":
            kwargs["entries"] = tuple(entry_from_proto(e) for e in source.entries)
        elif field.name == "snapshot":
            kwargs["snapshot"] = snapshot_from_proto(source.snapshot)
        else:
            kwargs[field.name] = getattr(source, field.name)
    message: rt.Message = cls(**kwargs)
    return message

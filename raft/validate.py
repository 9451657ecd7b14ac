"""Structural checks on incoming messages, before they may touch any state.

A message is dropped (never answered) when it is not addressed to this node, comes from a node
that is not a voter (or from this node itself), carries a term < 1, or has fields no correct
peer could send: negative indexes or terms, a last_log_term above the message term, entries
that do not follow prev_log_index contiguously or whose terms decrease or exceed the message
term, or an empty snapshot. Checks that depend on local state (an acknowledgement beyond our
last index) live with the role that handles the message.
"""

from __future__ import annotations

from collections.abc import Collection

from .types import (
    AppendRequest,
    AppendResponse,
    EntryKind,
    HeartbeatRequest,
    InstallSnapshotRequest,
    Message,
    VoteRequest,
)

_KINDS = frozenset(int(k) for k in EntryKind)


def is_well_formed(m: Message, self_id: int, voters: Collection[int]) -> bool:
    if m.to_id != self_id or m.from_id == self_id or m.from_id not in voters or m.term < 1:
        return False
    if isinstance(m, VoteRequest):
        return 0 <= m.last_log_term <= m.term and m.last_log_index >= 0
    if isinstance(m, AppendRequest):
        return _append_ok(m)
    if isinstance(m, AppendResponse):
        return m.index >= 0 and 0 <= m.hint_index <= m.index and m.hint_term >= 0
    if isinstance(m, HeartbeatRequest):
        return m.commit >= 0
    if isinstance(m, InstallSnapshotRequest):
        snap = m.snapshot
        return snap.index > 0 and 0 < snap.term <= m.term
    return True


def _append_ok(m: AppendRequest) -> bool:
    if m.prev_log_index < 0 or not 0 <= m.prev_log_term <= m.term or m.leader_commit < 0:
        return False
    if m.prev_log_index == 0 and m.prev_log_term != 0:
        return False
    index, term = m.prev_log_index, m.prev_log_term
    for entry in m.entries:
        if entry.index != index + 1 or not max(term, 1) <= entry.term <= m.term:
            return False
        if entry.kind not in _KINDS:
            return False
        index, term = entry.index, entry.term
    return True

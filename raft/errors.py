"""Typed errors of the Raft core, split by blame and by whether a retry can succeed.

`RetriableError` subclasses are normal operating conditions (not the leader, proposal dropped
while leadership moves): the caller retries, usually elsewhere. `StorageError` subclasses are
raised by storage implementations for indexes outside what they hold; the core converts them to
decisions (send a snapshot instead of entries) and never lets them escape. `ConfigError` is the
operator's fault and fatal.
"""

from __future__ import annotations

from .types import NONE


class RaftError(Exception):
    """Base of every error raised by strom.raft."""


class RetriableError(RaftError):
    """The request may succeed if retried (possibly on another node)."""


class NotLeader(RetriableError):
    """A proposal reached a node that is not the leader; `leader_id` is the known leader or 0."""

    def __init__(self, node_id: int, leader_id: int) -> None:
        hint = f"retry on node {leader_id}" if leader_id != NONE else "no leader known; retry later"
        super().__init__(f"node {node_id} is not the Raft leader: {hint}")
        self.node_id = node_id
        self.leader_id = leader_id


class ProposalDropped(RetriableError):
    """The leader refused a proposal for now (leadership transfer, uncommitted bytes bound)."""


class ConfigError(RaftError):
    """The Raft configuration is invalid; fix the named setting."""


class StorageError(RaftError):
    """Base of the errors a Storage raises for indexes it cannot serve."""


class CompactedError(StorageError):
    """The requested index lies below the first index: it is covered by the snapshot."""


class UnavailableError(StorageError):
    """The requested index lies above the last index."""

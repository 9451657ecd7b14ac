"""The Raft core's configuration: every knob once, with its default and a one-line doc."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class Config:
    node_id: int
    """This node's id (> 0); must be one of `voters`."""
    voters: tuple[int, ...]
    """The static voter set (no membership changes); ids > 0, unique."""
    election_timeout_ticks: int = 10
    """Base election timeout; each election draws one in [base, 2*base) (Raft §5.2)."""
    heartbeat_interval_ticks: int = 1
    """How often a leader sends heartbeats; must be < election_timeout_ticks."""
    pre_vote: bool = True
    """Run a pre-vote round before bumping the term (thesis §9.6)."""
    check_quorum: bool = True
    """Leader steps down without a quorum heard within an election timeout; followers that
    heard from a leader within one ignore (pre)votes (leader lease, thesis §6.2)."""
    entries_per_msg_max: int = 64
    """Most entries in one AppendRequest."""
    msg_bytes_max: int = 1 << 20
    """Most entry bytes in one AppendRequest (at least one entry is always sent)."""
    inflight_msgs_max: int = 16
    """Most unacknowledged AppendRequests per follower in the replicate state."""
    committed_bytes_per_ready_max: int = 4 << 20
    """Most entry bytes handed to the application in one Ready (at least one entry)."""
    uncommitted_bytes_max: int = 64 << 20
    """A leader refuses proposals while this many entry bytes are uncommitted."""
    applied: int = 0
    """Index the application has already applied (on restart); below it nothing is re-applied."""

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting."""
        if self.node_id <= 0:
            raise ConfigError(f"node_id must be > 0, got {self.node_id}")
        if not self.voters or len(set(self.voters)) != len(self.voters):
            raise ConfigError(f"voters must be non-empty and unique, got {self.voters}")
        if any(v <= 0 for v in self.voters):
            raise ConfigError(f"voter ids must be > 0, got {self.voters}")
        if self.node_id not in self.voters:
            raise ConfigError(f"node_id {self.node_id} is not among voters {self.voters}")
        if self.heartbeat_interval_ticks <= 0:
            raise ConfigError("heartbeat_interval_ticks must be > 0")
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks:
            raise ConfigError(
                f"election_timeout_ticks ({self.election_timeout_ticks}) must be greater than "
                f"heartbeat_interval_ticks ({self.heartbeat_interval_ticks})"
            )
        for name in (
            "entries_per_msg_max",
            "msg_bytes_max",
            "inflight_msgs_max",
            "committed_bytes_per_ready_max",
            "uncommitted_bytes_max",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.applied < 0:
            raise ConfigError("applied must be >= 0")

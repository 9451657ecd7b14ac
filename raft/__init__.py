"""The Raft consensus core: a pure state machine (no I/O, clocks, threads or randomness of its own).

See DESIGN.md §5. Only the standard library may be imported here (tests/unit/test_layout.py).
Entry points: `RawNode` (rawnode.py) with `Config`; the `Storage` protocol it reads and
`MemoryStorage`; the message and entry types in types.py.
"""

from .config import Config
from .core import Raft, UnknownNodeError
from .errors import (
    CompactedError,
    ConfigError,
    NotLeader,
    ProposalDropped,
    RaftError,
    RetriableError,
    StorageError,
    UnavailableError,
)
from .memory_storage import MemoryStorage
from .prng import SplitMix64
from .rawnode import PeerStatus, RawNode, Ready, Status
from .storage import LogStore, Storage
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
    SnapshotMeta,
    SoftState,
    TimeoutNowRequest,
    VoteRequest,
    VoteResponse,
)

__all__ = [
    "NONE",
    "AppendRequest",
    "AppendResponse",
    "CompactedError",
    "Config",
    "ConfigError",
    "Entry",
    "EntryKind",
    "HardState",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "InstallSnapshotRequest",
    "LogStore",
    "MemoryStorage",
    "Message",
    "NotLeader",
    "PeerStatus",
    "ProposalDropped",
    "Raft",
    "RaftError",
    "RawNode",
    "Ready",
    "RetriableError",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "SplitMix64",
    "Status",
    "Storage",
    "StorageError",
    "TimeoutNowRequest",
    "UnavailableError",
    "UnknownNodeError",
    "VoteRequest",
    "VoteResponse",
]

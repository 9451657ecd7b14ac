"""A hand-driven Raft network for transcript tests (etcd-io/raft's interaction environment).

Nothing moves unless a command says so: messages wait in one FIFO until delivered or dropped,
ticks are explicit, and election timeouts are not randomized (`rand_int` always returns 0, so
every node's timeout is exactly `election_timeout_ticks`). Persisting a Ready is immediate, so
a crash loses only what no `process`/`stabilize` has handed to storage yet.

Commands (one per transcript block; `ids` default to every node):
    cluster voters=N [pre_vote=B] [check_quorum=B] [election=T] [entries_per_msg=K]
    campaign ID | tick ID [COUNT] | propose ID DATA | transfer FROM TO | compact ID INDEX
    process [ids]              persist each node's Ready and queue its messages
    deliver [from=ID] [to=ID]  deliver queued messages (filtered), in order
    drop [from=ID] [to=ID]     discard queued messages (filtered)
    stabilize [ids]            repeat process + deliver among `ids` until nothing moves
    partition A B | C D        block links between the groups (messages are dropped)
    heal                       unblock every link
    crash ID | restart ID      lose volatile state / rebuild from the durable store
    status [ids] | log ID      show role, term, commit, applied / the stored log
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from strom.raft import (
    AppendRequest,
    AppendResponse,
    Config,
    Entry,
    EntryKind,
    HeartbeatRequest,
    HeartbeatResponse,
    InstallSnapshotRequest,
    MemoryStorage,
    Message,
    Raft,
    RaftError,
    RawNode,
    Snapshot,
    TimeoutNowRequest,
    VoteRequest,
    VoteResponse,
)

RaftFactory = Callable[[Config, MemoryStorage, Callable[[int], int]], Raft]


def fmt_message(m: Message) -> str:
    head = f"{m.from_id}->{m.to_id}"
    if isinstance(m, VoteRequest):
        kind = "PreVote" if m.pre_vote else "Vote"
        extra = " transfer" if m.leadership_transfer else ""
        return (
            f"{head} {kind}Request term={m.term} last={m.last_log_index}@{m.last_log_term}{extra}"
        )
    if isinstance(m, VoteResponse):
        kind = "PreVote" if m.pre_vote else "Vote"
        verdict = "granted" if m.granted else "rejected"
        return f"{head} {kind}Response term={m.term} {verdict}"
    if isinstance(m, AppendRequest):
        ents = " ".join(fmt_entry(e) for e in m.entries)
        return (
            f"{head} AppendRequest term={m.term} prev={m.prev_log_index}@{m.prev_log_term} "
            f"commit={m.leader_commit} [{ents}]"
        )
    if isinstance(m, AppendResponse):
        if m.success:
            return f"{head} AppendResponse term={m.term} ok index={m.index}"
        return (
            f"{head} AppendResponse term={m.term} reject index={m.index} "
            f"hint={m.hint_index}@{m.hint_term}"
        )
    if isinstance(m, HeartbeatRequest):
        return f"{head} HeartbeatRequest term={m.term} commit={m.commit}"
    if isinstance(m, HeartbeatResponse):
        return f"{head} HeartbeatResponse term={m.term}"
    if isinstance(m, InstallSnapshotRequest):
        s = m.snapshot
        return f"{head} InstallSnapshotRequest term={m.term} snapshot={s.index}@{s.term}"
    assert isinstance(m, TimeoutNowRequest)
    return f"{head} TimeoutNowRequest term={m.term}"


def fmt_entry(e: Entry) -> str:
    if e.kind is EntryKind.NOOP:
        return f"{e.index}@{e.term}:noop"
    return f"{e.index}@{e.term}:{e.data.decode()}"


@dataclass
class NetNode:
    node_id: int
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    raw: RawNode | None = None
    applied: list[str] = field(default_factory=list)


class Net:
    def __init__(
        self,
        voters: int,
        raft_factory: RaftFactory = Raft,
        **overrides: int | bool,
    ) -> None:
        self.voter_ids = tuple(range(1, voters + 1))
        self.overrides = overrides
        self.raft_factory = raft_factory
        self.nodes = {i: NetNode(i) for i in self.voter_ids}
        self.queue: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()
        for node in self.nodes.values():
            self._start(node)

    def _start(self, node: NetNode) -> None:
        snap = node.storage.snapshot()
        config = Config(
            node_id=node.node_id,
            voters=self.voter_ids,
            applied=snap.index,
            **self.overrides,  # type: ignore[arg-type]
        )
        factory = self.raft_factory

        class _Node(RawNode):
            def _make_raft(self, c: Config, s: object, r: Callable[[int], int]) -> Raft:
                return factory(c, node.storage, r)

        node.raw = _Node(config, node.storage, lambda n: 0)

    def raw(self, node_id: int) -> RawNode:
        raw = self.nodes[node_id].raw
        assert raw is not None, f"node {node_id} is down"
        return raw

    # ---- moving things ----

    def process(self, ids: list[int]) -> list[str]:
        """Persist every listed node's Ready (snapshot, entries, compaction, hard state),
        queue its messages and apply committed entries."""
        out: list[str] = []
        for node_id in ids:
            node = self.nodes[node_id]
            raw = node.raw
            if raw is None or not raw.has_ready():
                continue
            rd = raw.ready()
            if rd.soft_state is not None:
                role = rd.soft_state.role.name.lower()
                out.append(
                    f"{node_id} is {role} (term {raw.raft.term}, leader {rd.soft_state.leader_id})"
                )
            if rd.snapshot is not None:
                node.storage.install_snapshot(rd.snapshot)
                node.applied = [f"snapshot@{rd.snapshot.index}"]
                out.append(f"{node_id} installed snapshot {rd.snapshot.index}@{rd.snapshot.term}")
            if rd.entries:
                node.storage.append(list(rd.entries))
            if rd.compaction is not None:
                node.storage.compact(rd.compaction)
                out.append(f"{node_id} compacted log through {rd.compaction.index}")
            if rd.hard_state is not None:
                node.storage.set_hard_state(rd.hard_state)
            for m in (*rd.messages, *rd.persisted_messages):
                if (m.from_id, m.to_id) in self.blocked or self.nodes[m.to_id].raw is None:
                    out.append(f"dropped {fmt_message(m)}")
                else:
                    self.queue.append(m)
            for entry in rd.committed_entries:
                if entry.kind is EntryKind.NORMAL:
                    node.applied.append(entry.data.decode())
                    out.append(f"{node_id} applied {fmt_entry(entry)}")
            raw.advance(rd)
        return out

    def deliver(
        self, from_id: int | None = None, to_id: int | None = None, drop: bool = False
    ) -> list[str]:
        out: list[str] = []
        keep: list[Message] = []
        batch, self.queue = self.queue, []
        for m in batch:
            if (from_id is not None and m.from_id != from_id) or (
                to_id is not None and m.to_id != to_id
            ):
                keep.append(m)
                continue
            target = self.nodes[m.to_id].raw
            if drop or target is None or (m.from_id, m.to_id) in self.blocked:
                out.append(f"dropped {fmt_message(m)}")
                continue
            out.append(fmt_message(m))
            target.step(m)
        self.queue = keep + self.queue
        return out

    def stabilize(self, ids: list[int]) -> list[str]:
        out: list[str] = []
        chosen = set(ids)
        for _ in range(1000):
            moved = self.process(ids)
            pending = [m for m in self.queue if m.from_id in chosen and m.to_id in chosen]
            for m in pending:
                self.queue.remove(m)
            self.queue, rest = pending, self.queue
            moved += self.deliver()
            self.queue = rest + self.queue
            out += moved
            if not moved:
                return out
        raise AssertionError("stabilize did not converge")

    # ---- faults ----

    def partition(self, groups: list[set[int]]) -> None:
        for a in self.voter_ids:
            for b in self.voter_ids:
                if not any(a in g and b in g for g in groups):
                    self.blocked.add((a, b))

    def crash(self, node_id: int) -> None:
        self.nodes[node_id].raw = None
        self.queue = [m for m in self.queue if m.to_id != node_id]

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.applied = []
        self._start(node)

    # ---- looking ----

    def status(self, node_id: int) -> str:
        node = self.nodes[node_id]
        if node.raw is None:
            return f"{node_id}: down"
        s = node.raw.status()
        return (
            f"{node_id}: {s.role.name.lower()} term={s.term} vote={s.vote} leader={s.leader_id} "
            f"commit={s.commit} applied={s.applied} log={s.first_index}..{s.last_index}"
        )

    def log(self, node_id: int) -> str:
        store = self.nodes[node_id].storage
        snap = store.snapshot()
        first, last = store.first_index(), store.last_index()
        ents = store.entries(first, last + 1, 1 << 30) if last >= first else []
        head = f"snapshot={snap.index}@{snap.term} " if snap.index else ""
        return f"{node_id}: {head}[{' '.join(fmt_entry(e) for e in ents)}]"

    def compact(self, node_id: int, index: int) -> None:
        node = self.nodes[node_id]
        data = ",".join(node.applied).encode()
        self.raw(node_id).compact(index, data)


def run_command(
    net: Net | None, cmd: str, args: list[str], raft_factory: RaftFactory = Raft
) -> tuple[Net | None, list[str]]:
    """One transcript command; returns the (possibly new) network and the output lines."""
    kv = dict(a.split("=", 1) for a in args if "=" in a)
    pos = [a for a in args if "=" not in a]
    if cmd == "cluster":
        overrides: dict[str, int | bool] = {}
        names = {"election": "election_timeout_ticks", "entries_per_msg": "entries_per_msg_max"}
        for key, value in kv.items():
            if key == "voters":
                continue
            parsed: int | bool = value == "true" if value in ("true", "false") else int(value)
            overrides[names.get(key, key)] = parsed
        net = Net(int(kv["voters"]), raft_factory, **overrides)
        return net, [net.status(i) for i in net.voter_ids]
    assert net is not None, "start with `cluster`"
    ids = (
        [int(a) for a in pos]
        if pos and cmd in ("process", "stabilize", "status")
        else list(net.voter_ids)
    )
    out: list[str] = []
    if cmd == "campaign":
        net.raw(int(pos[0])).campaign()
    elif cmd == "tick":
        for _ in range(int(pos[1]) if len(pos) > 1 else 1):
            net.raw(int(pos[0])).tick()
    elif cmd == "propose":
        try:
            out.append(f"index {net.raw(int(pos[0])).propose(pos[1].encode())}")
        except RaftError as error:
            out.append(f"{type(error).__name__}: {error}")
    elif cmd == "transfer":
        net.raw(int(pos[0])).transfer_leadership(int(pos[1]))
    elif cmd == "compact":
        net.compact(int(pos[0]), int(pos[1]))
    elif cmd == "process":
        out = net.process(ids)
    elif cmd in ("deliver", "drop"):
        f, t = kv.get("from"), kv.get("to")
        out = net.deliver(int(f) if f else None, int(t) if t else None, drop=cmd == "drop")
    elif cmd == "stabilize":
        out = net.stabilize(ids)
    elif cmd == "partition":
        groups = " ".join(pos).split("|")
        net.partition([{int(x) for x in g.split()} for g in groups])
    elif cmd == "heal":
        net.blocked.clear()
    elif cmd == "crash":
        net.crash(int(pos[0]))
    elif cmd == "restart":
        net.restart(int(pos[0]))
    elif cmd == "status":
        out = [net.status(i) for i in ids]
    elif cmd == "log":
        out = [net.log(int(p)) for p in pos] if pos else [net.log(i) for i in net.voter_ids]
    else:
        raise AssertionError(f"unknown command {cmd!r}")
    return net, out or ["ok"]


__all__ = ["Net", "Snapshot", "fmt_message", "run_command"]

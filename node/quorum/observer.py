"""A broker-only node follows the metadata log as an observer (DESIGN.md §1).

It long-polls a controller's FetchLog for committed entries (or a snapshot, when it is too far
behind) and applies them to its MetadataState in order. Observers are outside the Raft
configuration, so adding or losing one never affects elections or commits. The observer keeps
no metadata log on disk: on restart it fetches a snapshot and the entries after it again.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from strom.client.tls import PLAINTEXT, SecurityOptions
from strom.node.metadata.state import MetadataState
from strom.node.peers import Peers
from strom.node.quorum.codec import entry_from_proto, snapshot_from_proto
from strom.raft.types import EntryKind
from strom.v1 import common_pb2, raft_pb2, raft_pb2_grpc

log = logging.getLogger("strom.observer")

FETCH_WAIT_MS = 1_000
FETCH_BYTES_MAX = 8 * 1024 * 1024


class MetadataFetchRefused(Exception):
    """A controller refused the fetch (e.g. another cluster's node)."""


class MetadataObserver:
    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        voters: dict[int, str],
        state: MetadataState,
        peers: Peers,
        timeout_s: float,
        security: SecurityOptions = PLAINTEXT,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.voters = voters
        self.state = state
        self.timeout_s = timeout_s
        self.security = security
        self.peers = peers
        self.next_index = 1
        self.leader_id = 0
        self.commit_index = 0

    def _stub(self, voter: int) -> raft_pb2_grpc.RaftStub:
        return self.peers.stub(raft_pb2_grpc.RaftStub, self.voters[voter], self.security)

    def _candidates(self) -> list[int]:
        ordered = sorted(self.voters)
        if self.leader_id in self.voters:
            ordered.remove(self.leader_id)
            ordered.insert(0, self.leader_id)
        return ordered

    async def run(self) -> None:
        failures = 0
        while True:
            progressed = False
            for voter in self._candidates():
                try:
                    await self._fetch_once(voter)
                    progressed = True
                    failures = 0
                    break
                except grpc.aio.AioRpcError as exc:
                    log.debug("metadata fetch from node %d failed: %s", voter, exc.code().name)
                    if voter == self.leader_id:
                        # Unknown until a voter names it again: the controller client must not
                        # keep preferring a leader that stopped answering.
                        self.leader_id = 0
                except MetadataFetchRefused as exc:
                    log.warning("%s", exc)
            if not progressed:
                failures += 1
                await asyncio.sleep(min(1.0, 0.1 * failures))

    async def _fetch_once(self, voter: int) -> None:
        request = raft_pb2.FetchLogRequest(
            cluster_id=self.cluster_id,
            observer_id=self.node_id,
            fetch_index=self.next_index,
            max_bytes=FETCH_BYTES_MAX,
            max_wait_ms=FETCH_WAIT_MS,
        )
        response = await self._stub(voter).FetchLog(
            request, timeout=FETCH_WAIT_MS / 1000 + self.timeout_s
        )
        if response.error_code != common_pb2.NONE:
            raise MetadataFetchRefused(
                f"node {voter} refused metadata fetch: {response.error_message}"
            )
        self.leader_id = response.leader_id
        self.commit_index = response.commit_index
        if response.HasField("snapshot") and response.snapshot.index >= self.next_index:
            self.state.restore(snapshot_from_proto(response.snapshot))
            self.next_index = response.snapshot.index + 1
        for proto in response.entries:
            entry = entry_from_proto(proto)
            if entry.index != self.next_index:
                continue  # already applied (a retried fetch) or a gap the next fetch fills
            if entry.kind == EntryKind.NORMAL:
                self.state.apply(entry)
            self.next_index = entry.index + 1

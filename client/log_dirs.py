"""Admin.describe_log_dirs: the partition logs each broker holds (Kafka's DescribeLogDirs).

Mixed into AsyncAdmin (client/admin.py). Each broker answers only about itself, so the client
asks every broker in the metadata at once. Needs DESCRIBE on the cluster when the cluster's
authorizer is on (AuthorizationFailedError otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from strom.v1 import admin_pb2, common_pb2

from .cluster import ClusterClient
from .errors import error_name


@dataclass(frozen=True, slots=True)
class ReplicaLog:
    """One partition's log on one broker."""

    topic: str
    partition: int
    size_bytes: int
    offset_lag: int  # max(0, high watermark - log end offset), as Kafka reports it
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    leader: bool  # this broker leads the partition


@dataclass(frozen=True, slots=True)
class LogDir:
    broker_id: int
    path: str
    total_bytes: int  # of its file system; -1 when unknown
    usable_bytes: int
    error: str  # Kafka's error name; "NONE" when readable
    partitions: tuple[ReplicaLog, ...]


class AsyncLogDirsAdmin:
    cluster: ClusterClient

    async def describe_log_dirs(self, topics: Sequence[str] | None = None) -> list[LogDir]:
        """Every broker's log directories and the partition logs in them (`topics`: only
        those topics' partitions)."""
        await self.cluster.refresh_metadata([])
        request = admin_pb2.DescribeLogDirsRequest(topics=list(topics or ()))
        addresses = sorted(self.cluster.meta.brokers.items())
        answers = await asyncio.gather(
            *(
                self.cluster.call(
                    address,
                    self.cluster.admin_stub(address).DescribeLogDirs,
                    request,
                    self.cluster.request_timeout_s,
                )
                for _, address in addresses
            )
        )
        return [
            LogDir(
                response.broker_id,
                d.log_dir,
                d.total_bytes,
                d.usable_bytes,
                error_name(d.error_code) if d.error_code != common_pb2.NONE else "NONE",
                tuple(
                    ReplicaLog(
                        t.name,
                        p.partition,
                        p.size_bytes,
                        p.offset_lag,
                        p.log_start_offset,
                        p.log_end_offset,
                        p.high_watermark,
                        p.is_leader,
                    )
                    for t in d.topics
                    for p in t.partitions
                ),
            )
            for response in answers
            for d in response.results
        ]

"""Compaction on a real cluster: the committed offsets of one group, written many times to the
compacted topic `__consumer_offsets`, shrink to about one record per key on every replica, stay
correct, and survive a restart of the coordinator's broker (which reloads them from the
compacted log)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_harness import Cluster, eventually

from strom.client.admin import AsyncAdmin, NewTopic
from strom.client.producer import AsyncProducer

pytestmark = pytest.mark.integration

COMMITS = 1_500
RECORDS = 100
PARTITIONS = 3
GROUP = "compacted"
TOPIC = "events"


def offsets_bytes(cluster: Cluster) -> dict[int, int]:
    """Bytes of `__consumer_offsets-0` segment files on each node."""
    _, nodes = cluster.local.load()
    sizes = {}
    for node in nodes:
        root: Path = cluster.local.node_dir(node.node_id)
        files = list(root.glob("**/__consumer_offsets-0/*.log"))
        sizes[node.node_id] = sum(f.stat().st_size for f in files)
    return sizes


def test_offsets_topic_is_compacted_and_survives_a_restart(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(
        3,
        **{
            "log.cleaner.backoff.ms": "500",
            "log.segment.bytes": "16384",
            "offsets.topic.num.partitions": "1",
        },
    )
    with cluster.admin() as admin:
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3)])

    async def commit_many() -> dict[tuple[str, int], int]:
        # Committed offsets must lie within each partition's range: give them RECORDS records.
        async with AsyncProducer(cluster.bootstrap, linger_ms=5) as producer:
            futures = [
                await producer.send(TOPIC, b"x", partition=p)
                for p in range(PARTITIONS)
                for _ in range(RECORDS)
            ]
            for future in futures:
                await future
        async with AsyncAdmin(cluster.bootstrap, request_timeout_ms=5_000) as admin:
            last: dict[tuple[str, int], int] = {}
            for i in range(COMMITS):
                last = {(TOPIC, p): (i * 7 + p) % (RECORDS + 1) for p in range(PARTITIONS)}
                await admin.alter_group_offsets(GROUP, last)
            return last

    expected = asyncio.run(commit_many())
    raw_bytes = COMMITS * 150  # a batch of 3 commit records is well over 150 bytes
    # Each replica cleans its own copy: all shrink to the active segment plus a few records.
    sizes = eventually(
        lambda: (s := offsets_bytes(cluster)) and max(s.values()) < 20_000 and s,
        timeout_s=30,
        what="the offsets partition compacted on every replica",
    )
    assert all(size < raw_bytes / 10 for size in sizes.values()), sizes
    with cluster.admin() as admin:
        assert admin.list_group_offsets(GROUP) == expected
        coordinator = admin.describe_group(GROUP).coordinator_id
    cluster.local.stop(coordinator)
    cluster.local.up()
    cluster.wait_healthy()

    def reloaded() -> bool:
        with cluster.admin() as admin:
            return admin.list_group_offsets(GROUP) == expected

    eventually(reloaded, timeout_s=30, what="committed offsets after the restart")
    print(f"offsets partition: ~{raw_bytes}+ bytes written, {sizes} after cleaning")

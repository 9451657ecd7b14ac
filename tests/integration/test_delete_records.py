"""DeleteRecords with real node processes: the leader advances the log start offset, followers
follow it, consumers cannot read below it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_harness import Cluster, eventually, read_partition

from strom.client.admin import NewTopic
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer

pytestmark = pytest.mark.integration


def test_delete_records_moves_the_log_start_on_every_replica(
    cluster: Cluster, tmp_path: Path
) -> None:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("trim", 1, 3)])

    async def produce() -> None:
        async with AsyncProducer(cluster.bootstrap, acks="all") as producer:
            futures = [
                await producer.send("trim", f"v{i}".encode(), partition=0) for i in range(100)
            ]
            await asyncio.gather(*futures)

    asyncio.run(produce())
    offsets = tmp_path / "offsets.json"
    offsets.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "trim", "partition": 0, "offset": 40}]}))  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "strom.node.cli", "topics", "delete-records",
         "--offset-json-file", str(offsets), "--bootstrap-server", cluster.bootstrap],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "partition: trim-0\tlow_watermark: 40" in result.stdout

    with cluster.admin() as admin:
        assert admin.list_offsets([("trim", 0)], -2) == {("trim", 0): 40}

        def every_replica_starts_at_40() -> bool:
            starts = {
                d.broker_id: p.log_start_offset
                for d in admin.describe_log_dirs(["trim"])
                for p in d.partitions
            }
            return starts == {1: 40, 2: 40, 3: 40}

        eventually(every_replica_starts_at_40, what="followers at the new log start")
        with pytest.raises(StromError) as err:
            admin.delete_records({("trim", 0): 101})  # beyond the high watermark
        assert err.value.name == "OFFSET_OUT_OF_RANGE"
        assert admin.delete_records({("trim", 0): 10}) == {("trim", 0): 40}  # never backwards
    records = read_partition(cluster.bootstrap, "trim", 0, 60)
    assert [o for o, _ in records] == list(range(40, 100))

"""A broker whose log of one partition cannot be opened keeps running, and the cluster moves
that replica out of the way (issue #14, defect 4), with real node processes.

Node 2's recovery checkpoint of one partition is damaged while it is down. Before, the broker
could not start at all. Now it starts, serves its other replicas, reports the damaged one to the
controller with its heartbeats, and the controller takes it out of the ISR and leadership; the
node says so in its log, its metrics and `strom cluster describe`. Produce and consume on that
partition go on with the other replicas.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest
from cluster_harness import Cluster, eventually
from test_replication import read_partition

from strom.client.admin import NewTopic
from strom.client.producer import Producer
from strom.node.cli.node import key_numbers, scrape

pytestmark = pytest.mark.integration

TOPIC = "fragile"


def test_a_replica_whose_log_cannot_be_opened_goes_offline_and_the_rest_serves(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3, admin=True)
    with cluster.admin() as admin:
        admin.create_topics([NewTopic(TOPIC, 3, 3, {"min.insync.replicas": "2"})])
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(30):
            producer.send(TOPIC, f"before-{i}".encode(), partition=i % 3)
        producer.flush()

    cluster.local.stop(2)
    damaged = cluster.local.node_dir(2) / "data" / f"{TOPIC}-0" / "recovery-point-offset-checkpoint"
    damaged.write_text("0\n1\nnot a checkpoint\n")
    cluster.local.start(2)
    cluster.wait_healthy([1, 2, 3])  # the broker runs, registered and unfenced

    def moved_away() -> bool:
        with cluster.admin() as admin:
            partitions = admin.describe_topics([TOPIC])[0].partitions
        p0 = partitions[0]
        others_back = all(2 in p.isr for p in partitions[1:])  # its healthy replicas rejoin
        return (
            p0.offline_replicas == (2,) and 2 not in p0.isr and p0.leader not in (-1, 2)
        ) and others_back

    eventually(moved_away, timeout_s=30, what="replica 2 of fragile-0 out of ISR and leadership")

    # The node says so: its log, its metrics, and `strom cluster describe`.
    assert "fragile-0: its log cannot be opened" in cluster.log_of(2)
    numbers = key_numbers(scrape(cluster.local.load()[1][1].admin_address, 5))
    assert numbers["offline replicas"] == 1
    described = subprocess.run(
        [sys.executable, "-m", "strom.node.cli", "cluster", "describe",
         "--bootstrap-server", cluster.bootstrap, "--output", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = {row["id"]: row for row in json.loads(described.stdout)["brokers"]}
    assert (rows[1]["offline"], rows[2]["offline"], rows[3]["offline"]) == (0, 1, 0)

    # The partition still takes and serves acks=all writes, from the other two replicas.
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(10):
            producer.send(TOPIC, f"after-{i}".encode(), partition=0)
        producer.flush()
    values = [v for _, v in read_partition(cluster.bootstrap, TOPIC, 0, 20)]
    assert values == [f"before-{i}".encode() for i in range(0, 30, 3)] + [
        f"after-{i}".encode() for i in range(10)
    ]

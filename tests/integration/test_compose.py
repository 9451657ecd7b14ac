"""docker-compose.yml in real containers: the image as built without a registry, every node
healthy (ready), clients on the host through EXTERNAL and inside the compose network through
INTERNAL, a leader killed under acks=all load, a node cut off the network, a restart of every
node, and `down -v`.

The scenarios share one compose project, in the order they are written (each leaves the cluster
healthy for the next), because bringing a cluster up is the slow part. Without a Docker engine
the module skips with one line; under CI=true it fails, since CI machines have one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from cluster_harness import SteadyProducer, assert_seed_tables, eventually, read_partition
from compose_harness import Compose, docker_or_skip, port_free

from strom.client.admin import Admin, NewTopic
from strom.client.consumer import Consumer
from strom.client.producer import Producer
from strom.client.records import TopicPartition

# The first test also waits for the image build and `up` (fixtures count towards its timeout).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

EXTERNAL = {1: "localhost:9092", 2: "localhost:9192", 3: "localhost:9292"}
BOOTSTRAP = ",".join(EXTERNAL.values())


@pytest.fixture(scope="module")
def compose(strom_image: str) -> Iterator[Compose]:
    tool = docker_or_skip()
    busy = [a for a in EXTERNAL.values() if not port_free(int(a.rsplit(":", 1)[1]))]
    assert not busy, f"host ports taken (docker-compose.yml publishes them): {busy}"
    project = Compose(tool, ["docker-compose.yml"], f"stromtest{os.getpid()}")
    try:
        start = time.monotonic()
        project.up()
        took = project.wait_healthy(project.nodes())
        print(f"\ncompose up {time.monotonic() - start:.1f} s (healthy after {took:.1f} s)")
        yield project
    finally:
        project.down()


def admin() -> Admin:
    return Admin(BOOTSTRAP, request_timeout_ms=5_000)


def strom_cli(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "strom.node.cli", *args],
        capture_output=True, text=True, timeout=120, input=stdin,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def wait_every_broker_unfenced() -> None:
    """A container's healthcheck can pass while the controller still has that broker fenced
    (after a partition heals, its session lapsed); placing RF=3 needs all three unfenced."""

    def unfenced() -> bool:
        with admin() as a:
            brokers = a.describe_cluster().brokers
        return sorted(b.node_id for b in brokers if not b.fenced) == sorted(EXTERNAL)

    eventually(unfenced, timeout_s=60, what="every broker unfenced")


def isr(topic: str) -> list[tuple[int, ...]]:
    with admin() as a:
        return [p.isr for p in a.describe_topics([topic])[0].partitions]


def test_nodes_run_as_a_non_root_user_on_a_read_only_root(compose: Compose) -> None:
    for service in compose.nodes():
        state = compose.inspect(service)
        assert state["Config"]["User"] == "10001:10001"  # type: ignore[index]
        assert state["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
        uid = compose("exec", "-T", service, "id", "-u").stdout.strip()
        assert uid == "10001"
        denied = compose("exec", "-T", service, "touch", "/opt/strom/x", check=False)
        assert denied.returncode != 0, "the root filesystem is writable"


def test_nodes_run_the_compiled_record_codec_without_a_compiler(compose: Compose) -> None:
    """The build stage compiled storage/_codec.c; the image itself carries no compiler."""
    (service, *_) = compose.nodes()
    version = compose("exec", "-T", service, "strom", "--version").stdout
    assert "record codec: compiled" in version, version
    compiler = compose("exec", "-T", service, "sh", "-c", "command -v gcc cc", check=False)
    assert compiler.stdout.strip() == "", compiler.stdout


def test_host_clients_reach_every_broker_through_external(compose: Compose) -> None:
    with admin() as a:
        brokers = {b.node_id: f"{b.host}:{b.port}" for b in a.describe_cluster().brokers}
        assert brokers == EXTERNAL, "a host client is told the EXTERNAL addresses"
        a.create_topics([NewTopic("host-events", 3, 3)])
    with Producer(BOOTSTRAP, acks="all") as producer:
        for i in range(30):
            producer.send("host-events", f"sdk-{i}".encode(), key=f"k{i}".encode())
        producer.flush()
    seen: list[str] = []
    with Consumer(BOOTSTRAP, group_id="host-sdk", auto_offset_reset="earliest") as consumer:
        consumer.subscribe(["host-events"])
        deadline = time.monotonic() + 60
        while len(seen) < 30 and time.monotonic() < deadline:
            seen += [r.value.decode() for r in consumer.poll(timeout_ms=500) if r.value]
    assert sorted(seen) == sorted(f"sdk-{i}" for i in range(30))

    lines = "".join(f"cli-{i}\n" for i in range(5))
    strom_cli("produce", "host-events", "--bootstrap-server", EXTERNAL[2], stdin=lines)
    out = strom_cli(
        "consume", "host-events", "--from-beginning", "--max-messages", "35",
        "--bootstrap-server", EXTERNAL[3],
    )  # fmt: skip
    assert all(f"cli-{i}" in out for i in range(5)) and "sdk-29" in out


def test_seed_walkthrough_from_the_host(compose: Compose) -> None:
    assert_seed_tables(strom_cli("demo", "--bootstrap-server", EXTERNAL[1]))


def test_client_container_uses_the_internal_listeners(compose: Compose) -> None:
    inside = ("--bootstrap-server", "strom1:19092")
    compose.client("topics", "create", "inside-events", "--partitions", "3",
                   "--replication-factor", "3", *inside)  # fmt: skip
    lines = "".join(f"inside-{i}\n" for i in range(9))
    compose.client("produce", "inside-events", *inside, stdin=lines)
    out = compose.client(
        "consume", "inside-events", "--from-beginning", "--max-messages", "9", *inside
    ).stdout
    assert sorted(out.split()) == sorted(f"inside-{i}" for i in range(9))
    described = compose.client("cluster", "describe", *inside).stdout
    for n in (1, 2, 3):
        assert f"strom{n}:19092" in described, "a container is told the INTERNAL addresses"


def test_killed_leader_loses_nothing_acknowledged_and_rejoins(compose: Compose) -> None:
    with admin() as a:
        a.create_topics([NewTopic("killed", 1, 3, {"min.insync.replicas": "2"})])
    (leader,) = [p.leader for p in eventually(lambda: admin_partitions("killed"), what="leader")]
    victim = f"strom{leader}"
    with SteadyProducer(BOOTSTRAP, "killed", 0) as producer:
        eventually(lambda: len(producer.acked) > 200, timeout_s=30, what="acknowledged writes")
        compose.kill(victim)
        before = len(producer.acked)
        eventually(lambda: len(producer.acked) > before + 200, timeout_s=45, what="new leader")
        assert compose.health(victim) == "not running", "restart policy brought it back itself"
        compose("start", victim)
        compose.wait_healthy([victim])
        eventually(lambda: sorted(isr("killed")[0]) == [1, 2, 3], timeout_s=45,
                   what=f"{victim} back in the ISR")  # fmt: skip
    acked = producer.acked
    assert acked, "nothing was acknowledged"
    stored = dict(read_partition(BOOTSTRAP, "killed", 0, max(o for o, _ in acked) + 1))
    lost = [(o, v) for o, v in acked if stored.get(o) != v]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"


def admin_partitions(topic: str) -> list[object]:
    with admin() as a:
        partitions = a.describe_topics([topic])[0].partitions
    return list(partitions) if all(p.leader > 0 for p in partitions) else []


def test_partitioned_node_is_replaced_and_rejoins(compose: Compose) -> None:
    with admin() as a:
        a.create_topics([NewTopic("partitioned", 3, 3, {"min.insync.replicas": "2"})])
    leaders = {p.partition: p.leader for p in eventually(
        lambda: admin_partitions("partitioned"), what="leaders")}  # fmt: skip
    cut = leaders[0]
    rest = ",".join(a for n, a in EXTERNAL.items() if n != cut)
    compose.disconnect(f"strom{cut}")
    try:

        def moved() -> bool:
            with Admin(rest, request_timeout_ms=3_000) as a:
                (p0, *_) = a.describe_topics(["partitioned"])[0].partitions
            return p0.leader not in (cut, -1)

        eventually(moved, timeout_s=45, what=f"a new leader for partition 0 without strom{cut}")
        with Producer(rest, acks="all", delivery_timeout_ms=30_000) as producer:
            futures = [producer.send("partitioned", b"during", partition=0) for _ in range(10)]
            offsets = [future.result(timeout=30) for future in futures]
        assert len({md.offset for md in offsets}) == 10
    finally:
        compose.reconnect(f"strom{cut}")
    compose.wait_healthy([f"strom{cut}"])
    wait_every_broker_unfenced()
    eventually(lambda: all(sorted(r) == [1, 2, 3] for r in isr("partitioned")), timeout_s=60,
               what=f"strom{cut} back in every ISR")  # fmt: skip
    values = [v for _, v in read_partition(BOOTSTRAP, "partitioned", 0, 10)]
    assert values.count(b"during") == 10


def test_restart_of_every_node_keeps_topics_records_and_offsets(compose: Compose) -> None:
    wait_every_broker_unfenced()
    with admin() as a:
        a.create_topics([NewTopic("durable", 3, 3)])
    with Producer(BOOTSTRAP, acks="all") as producer:
        for p in range(3):
            for i in range(20):
                producer.send("durable", f"p{p}-{i}".encode(), partition=p)
        producer.flush()
    phases = Phases()
    with Consumer(BOOTSTRAP, group_id="durable-group", enable_auto_commit=False) as consumer:
        consumer.subscribe(["durable"])
        eventually(lambda: consumer.poll(timeout_ms=200) is not None and
                   len(consumer.assignment()) == 3, timeout_s=60, what="assignment")  # fmt: skip
        phases.mark("join")
        consumer.commit({TopicPartition("durable", p): 15 for p in range(3)})
    phases.mark("commit and leave")
    with admin() as a:
        topics_before = set(a.list_topics())
        committed = a.list_group_offsets("durable-group")
    assert committed == {("durable", p): 15 for p in range(3)}

    phases.mark("before restart")
    compose("restart", "-t", "10", *compose.nodes(), timeout_s=180)
    phases.mark("restart")
    compose.wait_healthy(compose.nodes())
    phases.mark("healthy")

    def same_topics() -> bool:
        with admin() as a:
            return set(a.list_topics()) == topics_before

    eventually(same_topics, timeout_s=30, what="every topic after the restart")
    for p in range(3):
        values = [v.decode() for _, v in read_partition(BOOTSTRAP, "durable", p, 20)]
        assert values == [f"p{p}-{i}" for i in range(20)]
    phases.mark("topics and records")
    with admin() as a:
        assert a.list_group_offsets("durable-group") == committed
    resumed: list[str] = []
    with Consumer(BOOTSTRAP, group_id="durable-group", enable_auto_commit=False) as consumer:
        consumer.subscribe(["durable"])
        deadline = time.monotonic() + 60
        while len(resumed) < 15 and time.monotonic() < deadline:
            resumed += [r.value.decode() for r in consumer.poll(timeout_ms=500) if r.value]
    phases.mark("resume from the committed offsets")
    print(f"\nrestart scenario: {phases}")
    assert sorted(resumed) == sorted(f"p{p}-{i}" for p in range(3) for i in range(15, 20))


class Phases:
    """Seconds per phase of a scenario, printed with -s (where the CI minutes go)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name], self.last = now - self.last, now

    def __str__(self) -> str:
        return ", ".join(f"{name} {s:.1f} s" for name, s in self.seconds.items())


def test_down_with_volumes_leaves_nothing(compose: Compose) -> None:
    compose.down()
    assert compose.leftovers() == {"containers": [], "networks": [], "volumes": []}

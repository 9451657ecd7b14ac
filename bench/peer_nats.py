"""NATS JetStream as a peer: Debian's `nats-server` (2.9.x) and the Python client `nats-py`.

Servers: `start_cluster(group, root, nodes)` writes one config per node (its own store dir,
client and route ports on 127.0.0.1; with 3 nodes, a cluster named `bench` whose routes list
all three) and waits until every client port listens. JetStream's meta leader is elected after
that, so `produce()` retries creating its stream until the cluster accepts it.

Produce: one stream per measure (file storage, `num_replicas` = R), 100-byte messages, at most
`window` unacknowledged publishes in flight; the clock stops when every message has its PubAck,
and the stream's message count is checked afterwards. Two ways with nats-py:
- `PIPELINED` (the fastest honest way found): core `nc.publish` with a reply subject per
  message under one wildcard inbox subscription; each reply is parsed as a PubAck (an error ack
  or a no-responders status fails the measure). This is what JetStream publishing is on the
  wire; it skips nats-py's per-message future bookkeeping: 1.2–2.5× `PUBLISH_ASYNC` here.
- `PUBLISH_ASYNC`: nats-py's own `js.publish_async`, a future per message (its semaphore bounds
  the window), all gathered at the end: what a nats-py user would write.
  (Awaiting `js.publish` in gathered windows was slower still: ~0.7× `PUBLISH_ASYNC`.)

Consume: `PUSH`, an ordered push consumer (flow-controlled, no acks) counting messages in its
callback; or `PULL`, a durable pull consumer with AckPolicy.NONE, `fetch(batch)` in a loop
(several times slower in nats-py). Both count messages handed to the application.

JetStream's file store does not fsync each write (it syncs every 2 minutes by default);
replication to the R3 quorum is what makes an ack durable, as in Kafka and strom.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

from bench_procs import ProcessGroup, ServerError, free_ports

STREAM_READY_TIMEOUT_S = 60.0
ACK_TIMEOUT_S = 300.0  # every publish acknowledged / every message read within this
PUSH_PENDING_MSGS_MAX = 100_000
PIPELINED = "pipelined"  # produce modes
PUBLISH_ASYNC = "publish_async"
PUSH = "push"  # consume modes
PULL = "pull"


def available() -> str | None:
    """None if NATS can be benchmarked here, else a one-line reason."""
    if shutil.which("nats-server") is None:
        return "nats-server not found (apt-get install -y nats-server)"
    try:
        import nats  # noqa: F401
    except ImportError:
        return "Python client nats-py not installed (pip install -e '.[bench]')"
    return None


def _config(name: str, store: Path, port: int, route_port: int, routes: list[int]) -> str:
    text = (
        f"server_name: {name}\n"
        f"listen: 127.0.0.1:{port}\n"
        "max_payload: 1MB\n"
        f'jetstream {{\n  store_dir: "{store}"\n  max_memory_store: 256MB\n'
        "  max_file_store: 8GB\n}\n"
    )
    if routes:
        urls = ", ".join(f"nats://127.0.0.1:{p}" for p in routes)
        text += (
            f"cluster {{\n  name: bench\n  listen: 127.0.0.1:{route_port}\n  routes: [{urls}]\n}}\n"
        )
    return text


def start_cluster(group: ProcessGroup, root: Path, nodes: int) -> str:
    """Start `nodes` nats-servers under `root`; returns the client URL list (comma-separated)."""
    ports = free_ports(2 * nodes)
    client_ports, route_ports = ports[:nodes], ports[nodes:]
    procs = []
    for i in range(nodes):
        node_dir = root / f"n{i + 1}"
        (node_dir / "store").mkdir(parents=True)
        conf = node_dir / "nats.conf"
        routes = route_ports if nodes > 1 else []
        conf.write_text(
            _config(f"n{i + 1}", node_dir / "store", client_ports[i], route_ports[i], routes)
        )
        procs.append(group.start(["nats-server", "-c", str(conf)], node_dir / "server.log"))
    for proc, port in zip(procs, client_ports, strict=True):
        group.wait_port(proc, port, timeout_s=15)
    return ",".join(f"nats://127.0.0.1:{p}" for p in client_ports)


async def _connect(servers: str):  # type: ignore[no-untyped-def]
    import nats

    return await nats.connect(servers=servers.split(","), max_reconnect_attempts=0)


async def _add_stream(js, name: str, subject: str, replicas: int) -> None:  # type: ignore[no-untyped-def]
    from nats.js import api
    from nats.js.errors import Error as JsError

    config = api.StreamConfig(
        name=name, subjects=[subject], storage=api.StorageType.FILE, num_replicas=replicas
    )
    deadline = time.monotonic() + STREAM_READY_TIMEOUT_S
    while True:
        try:
            await js.add_stream(config)
            return
        except (TimeoutError, JsError) as e:
            # A fresh cluster answers "insufficient resources"/times out until its
            # JetStream meta leader is elected and every peer is known.
            if time.monotonic() > deadline:
                raise ServerError(f"JetStream did not accept stream {name}: {e!r}") from e
            await asyncio.sleep(0.5)


async def _publish_pipelined(nc, subject: str, stream: str, payload: bytes, count: int,
                             window: int) -> int:  # type: ignore[no-untyped-def]  # fmt: skip
    """Publish with a reply inbox per message, `window` unacknowledged at most; returns the
    number of PubAcks received (each parsed; an error ack or a no-responders status fails)."""
    acked = 0
    failure: list[str] = []
    done = asyncio.Event()
    in_flight = asyncio.Semaphore(window)

    async def on_ack(msg) -> None:  # type: ignore[no-untyped-def]
        nonlocal acked
        try:
            ack = json.loads(msg.data)
        except ValueError:
            ack = {"error": f"not a PubAck: {msg.data[:80]!r} {msg.headers}"}
        if ack.get("stream") != stream or "seq" not in ack:
            failure.append(str(ack.get("error", ack)))
            done.set()
        acked += 1
        in_flight.release()
        if acked == count:
            done.set()

    prefix = f"_BENCH_ACK.{nc._nuid.next().decode()}"
    await nc.subscribe(f"{prefix}.*", cb=on_ack)
    for i in range(count):
        await in_flight.acquire()
        await nc.publish(subject, payload, reply=f"{prefix}.{i}")
    await asyncio.wait_for(done.wait(), timeout=ACK_TIMEOUT_S)
    if failure:
        raise ServerError(f"JetStream refused a publish: {failure[0]}")
    return acked


async def _publish_async(js, subject: str, payload: bytes, count: int) -> int:  # type: ignore[no-untyped-def]
    futures = [await js.publish_async(subject, payload) for _ in range(count)]
    acks = await asyncio.gather(*futures)  # raises on any error ack
    return len(acks)


async def produce(
    servers: str, run: int, count: int, replicas: int, record_bytes: int,
    window: int = 4_000, mode: str = PIPELINED,
) -> float:  # fmt: skip
    """Records/s of `count` acknowledged publishes to a fresh R=`replicas` stream."""
    nc = await _connect(servers)
    try:
        js = nc.jetstream(publish_async_max_pending=window)
        stream, subject = f"BENCH{run}{mode}", f"bench.{run}.{mode}"
        await _add_stream(js, stream, subject, replicas)
        payload = b"x" * record_bytes
        started = time.perf_counter()
        if mode == PIPELINED:
            acked = await _publish_pipelined(nc, subject, stream, payload, count, window)
        else:
            acked = await _publish_async(js, subject, payload, count)
        elapsed = time.perf_counter() - started
        info = await js.stream_info(stream)
        if acked != count or info.state.messages != count:
            raise ServerError(
                f"NATS acknowledged {acked} of {count}; stream {stream} holds {info.state.messages}"
            )
        return count / elapsed
    finally:
        await nc.close()


async def _consume_pull(js, stream: str, subject: str, count: int, batch: int) -> int:  # type: ignore[no-untyped-def]
    from nats.js import api

    config = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL)
    sub = await js.pull_subscribe(
        subject, durable="reader", stream=stream, config=config,
        pending_msgs_limit=4 * batch, pending_bytes_limit=64 * 1024 * 1024,
    )  # fmt: skip
    seen = 0
    while seen < count:
        seen += len(await sub.fetch(min(batch, count - seen), timeout=10))
    return seen


async def _consume_push(js, stream: str, subject: str, count: int) -> int:  # type: ignore[no-untyped-def]
    seen = 0
    done = asyncio.Event()

    async def on_msg(_msg) -> None:  # type: ignore[no-untyped-def]
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    # An ordered consumer re-creates itself from the last stream sequence it saw on any gap,
    # so a message is never handed over twice; the pending limit is what nats-py buffers.
    await js.subscribe(
        subject, stream=stream, cb=on_msg, ordered_consumer=True,
        pending_msgs_limit=PUSH_PENDING_MSGS_MAX, pending_bytes_limit=64 * 1024 * 1024,
    )  # fmt: skip
    await asyncio.wait_for(done.wait(), timeout=ACK_TIMEOUT_S)
    return seen


async def consume(
    servers: str, run: int, count: int, mode: str = PIPELINED, how: str = PUSH,
    batch: int = 1_000,
) -> float:  # fmt: skip
    """Records/s of reading the `count` messages of the stream `produce(run, mode)` wrote,
    with an ordered push consumer (`how=PUSH`) or a pull consumer fetching `batch` at a time."""
    nc = await _connect(servers)
    try:
        js = nc.jetstream()
        stream, subject = f"BENCH{run}{mode}", f"bench.{run}.{mode}"
        started = time.perf_counter()
        if how == PUSH:
            seen = await _consume_push(js, stream, subject, count)
        else:
            seen = await _consume_pull(js, stream, subject, count, batch)
        elapsed = time.perf_counter() - started
        assert seen == count, (seen, count)
        return count / elapsed
    finally:
        await nc.close()


async def delete_stream(servers: str, run: int, mode: str) -> None:
    """Drop a measure's stream, to keep the store bounded across runs."""
    nc = await _connect(servers)
    try:
        await nc.jetstream().delete_stream(f"BENCH{run}{mode}")
    finally:
        await nc.close()

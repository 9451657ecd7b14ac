"""Redis Streams as a peer: Debian's `redis-server` and the Python client `redis` (redis-py).

Server: `start_server(group, root, aof=...)` runs one redis-server on a free loopback port in
its own directory, RDB snapshots off (`save ""`); with `aof=True`, `appendonly yes` and
`appendfsync everysec` (the AOF is written on every command and fsynced once a second, Redis'
default durability trade-off), else no persistence at all.

Produce: XADD of 100-byte values (one field `v`) to a fresh stream key, in non-transactional
pipelines of `pipeline_size` commands (one round trip per pipeline); every reply is an entry
id (redis-py raises on an error reply), and XLEN is checked once the clock stops.

Consume: XREAD COUNT `batch` from the last id seen until every entry was handed over.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from bench_procs import ProcessGroup, ServerError, free_port


def available() -> str | None:
    """None if Redis can be benchmarked here, else a one-line reason."""
    if shutil.which("redis-server") is None:
        return "redis-server not found (apt-get install -y redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "Python client redis-py not installed (pip install -e '.[bench]')"
    return None


def start_server(group: ProcessGroup, root: Path, aof: bool) -> int:
    """Start one redis-server under `root`; returns its port once it answers PING."""
    import redis

    root.mkdir(parents=True)
    port = free_port()
    argv = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root),
        "--save", "", "--daemonize", "no", "--protected-mode", "yes",
        "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec",
    ]  # fmt: skip
    proc = group.start(argv, root / "server.log")
    group.wait_port(proc, port, timeout_s=15)
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.Redis(port=port).ping()
            return port
        except redis.exceptions.BusyLoadingError as e:
            if time.monotonic() > deadline:
                raise ServerError(f"redis-server on port {port} is still loading") from e
            time.sleep(0.1)


def produce(
    port: int, run: int, count: int, record_bytes: int, pipeline_size: int = 1_000
) -> float:
    """Records/s of `count` XADDs, pipelined; every entry id received before the clock stops."""
    import redis

    client = redis.Redis(port=port)
    key = f"bench:{run}"
    client.delete(key)
    fields = {b"v": b"x" * record_bytes}
    acked = 0
    started = time.perf_counter()
    for start in range(0, count, pipeline_size):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(pipeline_size, count - start)):
            pipe.xadd(key, fields)  # type: ignore[arg-type]
        acked += len(pipe.execute())
    elapsed = time.perf_counter() - started
    if acked != count or client.xlen(key) != count:
        raise ServerError(f"Redis acknowledged {acked} of {count} XADDs")
    client.close()
    return count / elapsed


def consume(port: int, run: int, count: int, batch: int = 1_000) -> float:
    """Records/s of XREAD COUNT `batch` over stream bench:`run` from its start."""
    import redis

    client = redis.Redis(port=port)
    key = f"bench:{run}"
    last_id: bytes | str = "0-0"
    seen = 0
    started = time.perf_counter()
    while seen < count:
        reply = client.xread({key: last_id}, count=batch)
        if not reply:
            raise ServerError(f"stream {key} ended after {seen} of {count} entries")
        entries = reply[0][1]
        seen += len(entries)
        last_id = entries[-1][0]
    elapsed = time.perf_counter() - started
    client.delete(key)  # keep the server's memory bounded across runs
    client.close()
    return count / elapsed

"""The transactional workload (issue #21): a transactional producer and a read_committed
reader, recording a history for txn_checker.py.

Run inside a lab client host (never the root namespace):

    python -m faults.txn_workload '{"bootstrap": ..., "topic": ..., "history": ...,
                                    "healed_flag": ..., "seed": ...}'

- The producer (process "t0") runs transactions one after another: each writes two records to
  each of two distinct partitions drawn from the seed, then commits or, one time in three,
  aborts. The `txn` op is invoked with the values and the intended outcome, and completes
  `ok` when commit_transaction / abort_transaction returned, `fail` when a send or the commit
  was refused with an abortable error and abort_transaction then returned (certainly not
  committed), `info` on anything else (a timeout: it may have committed). After `info` or a
  fatal error the producer is closed and a new one calls init_transactions with the same
  transactional id, which fences the old epoch and ends its open transaction.
- The reader (process "reader") is a read_committed consumer assigned every partition from
  offset 0, polling until the producer stops; after each poll it asks the partitions' last
  stable offsets (`lso`, ListOffsets latest under read_committed), so the checker sees whether
  an LSO ever goes backwards, across leader and coordinator failovers.
- The test writes the heal's CLOCK_MONOTONIC time into `healed_flag`; the producer then runs
  `after_heal_s` more and stops. A last init_transactions ends any transaction left open, and a
  fresh read_committed consumer ("final") drains every partition to its last stable offset, so
  a committed transaction never read is a real loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from faults.history import Recorder
from faults.workload import Heal, records_of, wait_ready
from strom.client.consumer import AsyncConsumer
from strom.client.errors import TransactionAbortableError
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition

TRANSACTIONAL_ID = "chaos-txn"  # test_txn_chaos.py locates its coordinator by it
RECORDS_PER_PARTITION = 2
ABORT_ONE_IN = 3


def new_producer(bootstrap: str) -> AsyncProducer:
    return AsyncProducer(
        bootstrap, acks="all", linger_ms=5, transactional_id=TRANSACTIONAL_ID,
        request_timeout_ms=5_000, delivery_timeout_ms=20_000, transaction_timeout_ms=10_000,
    )  # fmt: skip


async def fresh_producer(bootstrap: str, stop: asyncio.Event) -> AsyncProducer | None:
    """A started producer with a new epoch of the transactional id (retried through faults)."""
    while not stop.is_set():
        producer = new_producer(bootstrap)
        try:
            await producer.init_transactions()
            return producer
        except Exception as exc:
            logging.warning("init_transactions: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.close(), 10)
            await asyncio.sleep(0.5)
    return None


async def one_transaction(
    producer: AsyncProducer, topic: str, writes: list[tuple[int, str]], commit: bool
) -> str:
    """Run one transaction; its history outcome: ok, fail (certainly aborted) or info."""
    try:
        producer.begin_transaction()
        for partition, value in writes:
            await producer.send(topic, value.encode(), partition=partition)
        if commit:
            await producer.commit_transaction()
        else:
            await producer.abort_transaction()
        return "ok"
    except TransactionAbortableError:
        try:
            await producer.abort_transaction()
            return "fail"
        except Exception:
            return "info"
    except Exception:
        return "info"


async def produce(
    rec: Recorder, bootstrap: str, topic: str, partitions: int, seed: int, stop: asyncio.Event
) -> None:
    rng = random.Random(seed)
    producer = await fresh_producer(bootstrap, stop)
    n = 0
    while producer is not None and not stop.is_set():
        txn = f"t{n}"
        n += 1
        chosen = rng.sample(range(partitions), 2)
        writes = [(p, f"{txn}-{p}-{i}") for p in chosen for i in range(RECORDS_PER_PARTITION)]
        commit = rng.randrange(ABORT_ONE_IN) != 0
        pending = rec.invoke("t0", "txn", {"txn": txn, "writes": [list(w) for w in writes],
                                           "outcome": "commit" if commit else "abort"})  # fmt: skip
        outcome = await one_transaction(producer, topic, writes, commit)
        if outcome == "ok":
            pending.ok()
        elif outcome == "fail":
            pending.fail("abortable error; aborted")
        else:
            pending.info("outcome unknown")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.close(), 10)
            producer = await fresh_producer(bootstrap, stop)
    if producer is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.close(), 10)


async def read_committed(
    rec: Recorder, bootstrap: str, topic: str, partitions: int, stop: asyncio.Event
) -> None:
    async with AsyncConsumer(
        bootstrap, auto_offset_reset="earliest", request_timeout_ms=5_000,
        isolation_level="read_committed",
    ) as c:  # fmt: skip
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        while not stop.is_set():
            pending = rec.invoke("reader", "poll", {})
            try:
                batch = await c.poll(timeout_ms=300)
                pending.ok({"records": records_of(batch)})
            except Exception as exc:
                pending.info(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)
            await observe_lso(rec, "reader", c, tps)


async def observe_lso(
    rec: Recorder, process: str, c: AsyncConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int] | None:
    """The last stable offsets the consumer is told now, recorded as an `lso` op."""
    pending = rec.invoke(process, "lso", {})
    try:
        stable = await c.list_offsets(tps, -1)  # read_committed: the last stable offsets
    except Exception as exc:
        pending.info(f"{type(exc).__name__}: {exc}")
        return None
    pending.ok({"offsets": [[tp.partition, stable[tp]] for tp in tps]})
    return stable


async def end_open_transaction(bootstrap: str, deadline_s: float) -> None:
    """A new epoch of the transactional id: the coordinator ends whatever the last producer
    left open, so the last stable offset reaches the end of every partition."""
    done = asyncio.Event()
    producer = await asyncio.wait_for(fresh_producer(bootstrap, done), deadline_s)
    assert producer is not None
    await producer.close()


async def final_drain(
    rec: Recorder, bootstrap: str, topic: str, partitions: int, deadline_s: float
) -> None:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    end = time.monotonic() + deadline_s
    async with AsyncConsumer(
        bootstrap, auto_offset_reset="earliest", request_timeout_ms=5_000,
        isolation_level="read_committed",
    ) as c:  # fmt: skip
        c.assign(tps)
        stable = await observe_lso(rec, "final", c, tps)
        while stable is None and time.monotonic() < end:
            await asyncio.sleep(0.2)
            stable = await observe_lso(rec, "final", c, tps)
        assert stable is not None, "no last stable offsets before the deadline"
        positions: dict[TopicPartition, int] = {}
        while time.monotonic() < end:
            pending = rec.invoke("final", "poll", {})
            try:
                batch = await c.poll(timeout_ms=500, max_records=5_000)
                pending.ok({"records": records_of(batch)})
            except Exception as exc:
                pending.info(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)
                continue
            positions = {tp: await c.position(tp) for tp in tps}
            if all(positions[tp] >= stable[tp] for tp in tps):
                return
        raise RuntimeError(f"final drain incomplete: positions {positions}, stable {stable}")


async def main(spec: dict[str, Any]) -> None:
    bootstrap, topic = spec["bootstrap"], spec["topic"]
    partitions = spec.get("partitions", 3)
    heal = Heal(Path(spec["healed_flag"]), partitions, 0)
    with Recorder(Path(spec["history"])) as rec:
        await wait_ready(bootstrap, topic, partitions, 60)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(produce(rec, bootstrap, topic, partitions, spec["seed"], stop)),
            asyncio.create_task(read_committed(rec, bootstrap, topic, partitions, stop)),
        ]
        await heal.wait()
        await asyncio.sleep(spec.get("after_heal_s", 5))
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await end_open_transaction(bootstrap, 60)
        await final_drain(rec, bootstrap, topic, partitions, 60)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main(json.loads(sys.argv[1])))

"""The chaos workload: producers and consumers against a strom cluster, recording a history.

Run inside the lab's client host (never the root namespace):

    python -m faults.workload '{"bootstrap": ..., "topic": ..., "duration_s": ..., ...}'

- Producer workers (processes w0..wN) share one idempotent producer (acks=all) and each sends
  unique values one at a time: invoke, then ok with (partition, offset) or info on any error
  (the write may or may not have happened).
- An assigned reader (process "reader") polls every partition from offset 0.
- Group consumers (g0, g1) in one group record every assignment change as an `assign` op with
  member id and epoch, applied between polls, so the checker can verify group exclusivity.
- After `duration_s` the producers stop; once the file `healed_flag` exists (the test heals the
  cluster first), a fresh reader drains every partition to its end offset ("final" process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from faults.history import Recorder
from strom.client.admin import AsyncAdmin, NewTopic
from strom.client.consumer import AsyncConsumer
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition


class RecordedConsumer(AsyncConsumer):
    """A group consumer whose assignment changes happen only in `apply()`, outside polls, so
    each change can be recorded as its own operation."""

    async def _apply_assignment(self) -> None:
        return None

    async def apply(self) -> None:
        await AsyncConsumer._apply_assignment(self)


async def wait_ready(bootstrap: str, topic: str, partitions: int, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    async with AsyncAdmin(bootstrap, request_timeout_ms=3_000) as admin:
        while True:
            try:
                await admin.create_topics(
                    [NewTopic(topic, partitions, 3, {"min.insync.replicas": "2"})]
                )
                return
            except StromError as exc:
                if exc.name == "TOPIC_ALREADY_EXISTS":
                    return
                if time.monotonic() > end:
                    raise
            await asyncio.sleep(0.5)


async def produce(
    rec: Recorder, bootstrap: str, topic: str, workers: int, stop: asyncio.Event
) -> None:
    async with AsyncProducer(
        bootstrap, acks="all", linger_ms=5, request_timeout_ms=5_000, delivery_timeout_ms=30_000
    ) as producer:

        async def worker(w: int) -> None:
            n = 0
            while not stop.is_set():
                value = f"w{w}-{n}"
                n += 1
                pending = rec.invoke(
                    f"w{w}", "send", {"key": None, "value": value, "partition": None}
                )
                try:
                    md = await (await producer.send(topic, value.encode()))
                    pending.ok({"partition": md.partition, "offset": md.offset})
                except StromError as exc:
                    pending.info(exc.name)
                except Exception as exc:  # the client itself failing is not a write outcome
                    pending.info(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(worker(w) for w in range(workers)))


def records_of(batch: list[Any]) -> list[list[Any]]:
    return [[r.partition, r.offset, (r.value or b"").decode()] for r in batch]


async def read_assigned(
    rec: Recorder, bootstrap: str, topic: str, partitions: int, stop: asyncio.Event
) -> None:
    async with AsyncConsumer(
        bootstrap, auto_offset_reset="earliest", request_timeout_ms=5_000
    ) as c:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        while not stop.is_set():
            pending = rec.invoke("reader", "poll", {})
            try:
                batch = await c.poll(timeout_ms=300)
                pending.ok({"records": records_of(batch)})
            except Exception as exc:
                pending.info(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)


async def read_group(
    rec: Recorder, bootstrap: str, topic: str, name: str, stop: asyncio.Event
) -> None:
    consumer = RecordedConsumer(
        bootstrap, group_id="chaos-group", client_id=name, auto_offset_reset="earliest",
        auto_commit_interval_ms=500, request_timeout_ms=5_000,
    )  # fmt: skip
    owned: list[int] | None = None
    try:
        consumer.subscribe([topic])
        while not stop.is_set():
            try:
                pending_assign = None
                group = consumer.group
                assert group is not None
                if group.assignment is not None and group.assignment != group.owned:
                    pending_assign = rec.invoke(name, "assign", {})
                    await consumer.apply()
                now_owned = sorted(tp.partition for tp in consumer.assignment())
                if pending_assign is not None:
                    pending_assign.ok({"group": "chaos-group", "member": group.member_id,
                                       "epoch": group.member_epoch, "partitions": now_owned})  # fmt: skip
                    owned = now_owned
                elif owned is None:
                    owned = now_owned
                pending = rec.invoke(name, "poll", {})
                try:
                    batch = await consumer.poll(timeout_ms=300)
                    pending.ok({"records": records_of(batch)})
                except Exception as exc:
                    pending.info(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.2)
            except Exception as exc:
                if pending_assign is not None:
                    pending_assign.info(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.close(), 10)


async def final_drain(
    rec: Recorder, bootstrap: str, topic: str, partitions: int, deadline_s: float
) -> None:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    end = time.monotonic() + deadline_s
    async with AsyncConsumer(
        bootstrap, auto_offset_reset="earliest", request_timeout_ms=5_000
    ) as c:
        c.assign(tps)
        while time.monotonic() < end:
            try:
                latest = await c.list_offsets(tps, -1)
                break
            except StromError:
                await asyncio.sleep(0.5)
        else:
            raise RuntimeError("the cluster did not answer ListOffsets after healing")
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
            if all(positions[tp] >= latest[tp] for tp in tps):
                return
        raise RuntimeError(f"final drain incomplete: positions {positions}, ends {latest}")


async def main(spec: dict[str, Any]) -> None:
    bootstrap, topic = spec["bootstrap"], spec["topic"]
    partitions = spec.get("partitions", 3)
    with Recorder(Path(spec["history"])) as rec:
        await wait_ready(bootstrap, topic, partitions, 60)
        stop_producing = asyncio.Event()
        stop_reading = asyncio.Event()
        tasks = [
            asyncio.create_task(produce(rec, bootstrap, topic, spec.get("workers", 6), stop_producing)),
            asyncio.create_task(read_assigned(rec, bootstrap, topic, partitions, stop_reading)),
            *(asyncio.create_task(read_group(rec, bootstrap, topic, f"g{i}", stop_reading))
              for i in range(spec.get("group_consumers", 2))),
        ]  # fmt: skip
        await asyncio.sleep(spec["duration_s"])
        stop_producing.set()
        await asyncio.wait_for(tasks[0], 60)
        healed = Path(spec["healed_flag"])
        while not healed.exists():
            await asyncio.sleep(0.2)
        stop_reading.set()
        await asyncio.wait_for(asyncio.gather(*tasks[1:], return_exceptions=True), 60)
        await final_drain(rec, bootstrap, topic, partitions, 90)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main(json.loads(sys.argv[1])))

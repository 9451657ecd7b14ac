"""The chaos workload: producers and consumers against a strom cluster, recording a history.

Run inside a lab client host (never the root namespace), one process per client host:

    python -m faults.workload '{"bootstrap": ..., "topic": ..., "history": ..., ...}'

- Producer workers (processes w0..wN) share one idempotent producer (acks=all) and each sends
  unique values one at a time: invoke, then ok with (partition, offset) or info on any error
  (the write may or may not have happened). `"produce": false` runs none.
- An assigned reader (process "reader") polls every partition from offset 0 (`"read": false`:
  none, and no final drain).
- Group consumers (`"group_consumers"`: their names, all in one group) record every assignment
  change as an `assign` op with member id and epoch, applied between polls, so the checker can
  verify group exclusivity. Two client hosts each running some of them let the nemesis put half
  the group on the minority side of a partition.
- Nothing stops on a timer: the test heals the cluster, then writes the heal's CLOCK_MONOTONIC
  time (ns) into the file `healed_flag`. The producers go on until every partition has
  acknowledged a write after that time (so the history shows the recovery), or for
  `after_heal_max_s`; then the consumers stop and a fresh reader drains every partition to its
  end offset ("final" process).
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


class Heal:
    """The test's heal flag, and the acknowledgements that show the cluster recovered from it."""

    def __init__(self, flag: Path, partitions: int, after_max_s: float) -> None:
        self.flag, self.partitions, self.after_max_s = flag, partitions, after_max_s
        self.last_ack_ns: dict[int, int] = {}

    def heal_ns(self) -> int | None:
        try:
            text = self.flag.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None  # empty: written but not yet flushed

    async def wait(self) -> int:
        while (healed := self.heal_ns()) is None:
            await asyncio.sleep(0.2)
        return healed

    def acked(self, partition: int) -> None:
        self.last_ack_ns[partition] = time.monotonic_ns()

    async def recovered(self) -> None:
        """Once healed: until every partition acknowledged a write after the heal, or for
        `after_max_s` (the checker then reports which partitions never recovered)."""
        healed = await self.wait()
        end = time.monotonic() + self.after_max_s
        while time.monotonic() < end:
            after = [p for p, t in self.last_ack_ns.items() if t > healed]
            if len(after) >= self.partitions:
                return
            await asyncio.sleep(0.2)


async def produce(rec: Recorder, bootstrap: str, topic: str, workers: int, heal: Heal) -> None:
    stop = asyncio.Event()
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
                    heal.acked(md.partition)
                except StromError as exc:
                    pending.info(exc.name)
                except Exception as exc:  # the client itself failing is not a write outcome
                    pending.info(f"{type(exc).__name__}: {exc}")

        async def stopper() -> None:
            await heal.recovered()
            await asyncio.sleep(1.0)  # a little steady state after the recovery
            stop.set()

        await asyncio.gather(stopper(), *(worker(w) for w in range(workers)))


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
    heal = Heal(Path(spec["healed_flag"]), partitions, spec.get("after_heal_max_s", 45))
    with Recorder(Path(spec["history"])) as rec:
        await wait_ready(bootstrap, topic, partitions, 60)
        stop_reading = asyncio.Event()
        producing = (
            [asyncio.create_task(produce(rec, bootstrap, topic, spec.get("workers", 6), heal))]
            if spec.get("produce", True)
            else []
        )
        reading = [
            *(
                [
                    asyncio.create_task(
                        read_assigned(rec, bootstrap, topic, partitions, stop_reading)
                    )
                ]
                if spec.get("read", True)
                else []
            ),
            *(
                asyncio.create_task(read_group(rec, bootstrap, topic, name, stop_reading))
                for name in spec.get("group_consumers", ["g0", "g1"])
            ),
        ]
        await heal.wait()
        if producing:
            await asyncio.wait_for(producing[0], spec.get("after_heal_max_s", 45) + 60)
        else:
            await asyncio.sleep(spec.get("after_heal_read_s", 5))  # let the group settle
        stop_reading.set()
        await asyncio.wait_for(asyncio.gather(*reading, return_exceptions=True), 60)
        if spec.get("read", True):
            await final_drain(rec, bootstrap, topic, partitions, 90)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main(json.loads(sys.argv[1])))

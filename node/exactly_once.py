"""The seed document's event chaining, exactly once: the inventory service consumes
`order-events`, reserves stock (a record in `inventory`) and asks for payment (a record in
`payment-requests`), in one transaction with the consumer's offsets (consume-transform-produce,
KIP-98/447).

    python -m strom.node.exactly_once --bootstrap-server localhost:9092

Each poll's records become one transaction: the reservations, the payment requests and the
offsets after the last order read commit together or not at all. Killed at any point (SIGKILL)
and restarted with the same transactional id, the new instance's `init_transactions()` fences
the old one and aborts its unfinished transaction; it then resumes from the offsets the last
committed transaction recorded, so a `read_committed` reader of `payment-requests` sees every
order's payment request exactly once (an aborted attempt's records stay in the log, invisible
to it). tests/integration/test_exactly_once.py kills this loop at random points to prove it.

One instance per transactional id: it reads every partition of `order-events` (assign(), no
group membership; the offsets are still the group's, committed in the transactions).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from strom.client.consumer import AsyncConsumer
from strom.client.producer import AsyncProducer
from strom.client.records import ConsumerRecord, TopicPartition

ORDERS = "order-events"
INVENTORY = "inventory"
PAYMENTS = "payment-requests"
GROUP = "inventory-service"

log = logging.getLogger("strom.exactly_once")


async def resume(consumer: AsyncConsumer, partitions: list[TopicPartition]) -> None:
    """Start each partition after the last committed transaction's offset (the beginning when
    none committed yet)."""
    consumer.assign(partitions)
    committed = await consumer.committed_offsets(partitions)
    fresh = [tp for tp, offset in committed.items() if offset < 0]
    for tp, offset in committed.items():
        if offset >= 0:
            consumer.seek(tp, offset)
    if fresh:
        await consumer.seek_to_beginning(fresh)


async def process(producer: AsyncProducer, records: list[ConsumerRecord]) -> None:
    """The transform: per order, a stock reservation and a payment request."""
    for record in records:
        order = record.value or b""
        await producer.send(INVENTORY, b"reserved:" + order, key=record.key)
        await producer.send(PAYMENTS, b"pay:" + order, key=record.key)


async def run(
    bootstrap: str, transactional_id: str, max_records: int, idle_exit_s: float | None
) -> int:
    """The loop; returns how many orders it processed (until idle for `idle_exit_s`)."""
    async with (
        AsyncProducer(bootstrap, transactional_id=transactional_id, linger_ms=5) as producer,
        AsyncConsumer(
            bootstrap, group_id=GROUP, isolation_level="read_committed",
            enable_auto_commit=False,
        ) as consumer,
    ):  # fmt: skip
        # First: fence any older instance and settle its transaction, so the offsets read
        # next are final.
        await producer.init_transactions()
        topic = await producer.cluster.topic(ORDERS)
        await resume(consumer, [TopicPartition(ORDERS, p) for p in sorted(topic.partitions)])
        done = 0
        idle_s = 0.0
        while idle_exit_s is None or idle_s < idle_exit_s:
            records = await consumer.poll(timeout_ms=250, max_records=max_records)
            if not records:
                idle_s += 0.25
                continue
            idle_s = 0.0
            producer.begin_transaction()
            await process(producer, records)
            offsets: dict[TopicPartition, int] = {}
            for record in records:
                offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            await producer.send_offsets_to_transaction(offsets, GROUP)
            await producer.commit_transaction()
            done += len(records)
            log.info("committed %d order(s), %d in all", len(records), done)
        return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m strom.node.exactly_once", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--bootstrap-server", default="localhost:9092")
    parser.add_argument("--transactional-id", default="inventory-service-1")
    parser.add_argument("--max-records", type=int, default=20, help="orders per transaction")
    parser.add_argument(
        "--idle-exit-s", type=float, default=None,
        help="stop after this long without new orders (default: run until killed)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.max_records < 1:
        parser.error("--max-records must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    done = asyncio.run(
        run(args.bootstrap_server, args.transactional_id, args.max_records, args.idle_exit_s)
    )
    print(f"processed {done} order(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

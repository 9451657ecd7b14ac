"""`strom demo`: the seed document's walkthrough, for now at the storage level.

Creates topic `order-events` with three partition logs in a temporary data directory, appends
Order1..Order6 round-robin (Order1 → P0, Order2 → P1, Order3 → P2, Order4 → P0, ...), reads
every partition back from its files and prints where each order landed. A later version runs
the same story against a three-node cluster.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

from strom.storage.log_manager import LogManager
from strom.storage.record_batch import Record, encode_batch
from strom.storage.record_decode import decode_batches

TOPIC = "order-events"
PARTITIONS = 3
ORDERS = [f"Order{i}" for i in range(1, 7)]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, rule, *body])


def main(args: argparse.Namespace | None = None) -> int:
    now_ms = int(time.time() * 1000)
    topic_id = str(uuid.uuid4())
    with tempfile.TemporaryDirectory(prefix="strom-demo-") as data_dir:
        print(f"Data directory: {data_dir}")
        print(f"Topic {TOPIC!r} ({PARTITIONS} partitions, topic id {topic_id})\n")
        with LogManager(data_dir, now_ms=now_ms) as manager:
            logs = [
                manager.get_or_create_log(TOPIC, p, topic_id=topic_id, now_ms=now_ms)
                for p in range(PARTITIONS)
            ]
            placed = []
            for i, order in enumerate(ORDERS):
                partition = i % PARTITIONS  # round-robin, as in the seed document
                batch = encode_batch(
                    [Record(order.encode(), f"{order} placed".encode(), (), now_ms)]
                )
                info = logs[partition].append(batch, leader_epoch=0, now_ms=now_ms)
                placed.append([order, f"P{partition}", str(info.first_offset)])
            print("Producer sends 6 messages, round-robin across partitions:\n")
            print(_table(["Order ID", "Partition", "Offset"], placed))

            print("\nRead back from each partition's segment files:\n")
            rows = []
            for p, log in enumerate(logs):
                records = decode_batches(log.read(log.log_start_offset, 1 << 20))
                contents = ", ".join(f"{r.offset}:{(r.key or b'').decode()}" for r in records)
                rows.append([f"P{p}", str(log.log_end_offset), contents])
            print(_table(["Partition", "Log end offset", "Records (offset:key)"], rows))
    return 0

"""`strom transactions list|describe` (Kafka's kafka-transactions.sh): what the cluster's
transaction coordinators know of each transactional id.

    strom transactions list [--state Ongoing]        # every id: producer id, state, coordinator
    strom transactions describe --transactional-id inventory-service-1
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from strom.node.cli.common import admin_client, client_arguments
from strom.node.cli.output import print_table

STATES = ("Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort")


def add_commands(sub: Any) -> None:
    transactions = sub.add_parser(
        "transactions", help="transactional ids and their transactions"
    ).add_subparsers(dest="action", required=True)
    listing = client_arguments(transactions.add_parser("list", help="every transactional id"))
    listing.add_argument("--state", action="append", choices=STATES, help="only these states")
    listing.set_defaults(handler=_list)
    describe = client_arguments(
        transactions.add_parser("describe", help="one id's current transaction")
    )
    describe.add_argument("--transactional-id", required=True)
    describe.set_defaults(handler=_describe)


def _list(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        listed = admin.list_transactions(args.state)
    if args.output == "json":
        print(json.dumps([
            {"transactional_id": t.transactional_id, "producer_id": t.producer_id,
             "state": t.state, "coordinator": t.coordinator_id}
            for t in listed
        ]))  # fmt: skip
        return 0
    print_table(
        ["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"],
        [[t.transactional_id, t.coordinator_id, t.producer_id, t.state] for t in listed],
    )
    return 0


def _describe(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        (d,) = admin.describe_transactions([args.transactional_id])
    partitions = ",".join(f"{t}-{p}" for t, p in d.partitions)
    duration_ms = int(time.time() * 1000) - d.start_ms if d.start_ms >= 0 else -1
    if args.output == "json":
        print(json.dumps({
            "transactional_id": d.transactional_id, "coordinator": d.coordinator_id,
            "state": d.state, "producer_id": d.producer_id, "producer_epoch": d.producer_epoch,
            "timeout_ms": d.timeout_ms, "start_ms": d.start_ms,
            "partitions": [list(tp) for tp in d.partitions],
        }))  # fmt: skip
        return 0
    print_table(
        ["COORDINATOR", "TRANSACTIONAL-ID", "PRODUCER-ID", "EPOCH", "STATE", "TIMEOUT-MS",
         "DURATION-MS", "PARTITIONS"],
        [[d.coordinator_id, d.transactional_id, d.producer_id, d.producer_epoch, d.state,
          d.timeout_ms, duration_ms if duration_ms >= 0 else "-", partitions or "-"]],
    )  # fmt: skip
    return 0

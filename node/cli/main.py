"""The `strom` parser and what it does with a handler's failure.

Each command group registers its own subcommands (`add_commands(sub)` in its module); this
module only puts them in order (the order `strom --help` lists them) and turns a user-facing
failure into `error: ...` and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from strom import __version__
from strom.client.errors import StromError
from strom.node.cli import (
    cluster,
    configs,
    demo,
    groups,
    node,
    perf,
    produce_consume,
    reassign,
    security,
    topics,
    transactions,
    web_console,
)
from strom.node.cli.common import CommandError, Handler
from strom.node.config import ConfigError
from strom.node.local_cluster import ClusterError
from strom.node.meta_properties import StorageFormatError
from strom.storage import compiled_codec

# Failures whose message is all the user needs (no traceback).
USER_ERRORS = (CommandError, StromError, ConfigError, ClusterError, StorageFormatError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strom", description="strom: an event streaming platform in the spirit of Kafka."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"strom {__version__} (record codec: {compiled_codec.describe()})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    node.add_commands(sub)
    cluster.add_commands(sub)
    security.add_certs_commands(sub)
    topics.add_commands(sub)
    produce_consume.add_commands(sub)
    groups.add_commands(sub)
    cluster.add_quorum_commands(sub)
    perf.add_commands(sub)
    security.add_commands(sub)
    reassign.add_commands(sub)
    configs.add_commands(sub)
    transactions.add_commands(sub)
    web_console.add_commands(sub)
    demo.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

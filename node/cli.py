"""The `strom` command line.

Server commands (`strom node ...`, `strom storage ...`, `strom cluster ...`) live beside the node;
client commands call `strom.client`. Each subcommand registers itself in `build_parser`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from strom import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strom", description="strom: an event streaming platform in the spirit of Kafka."
    )
    parser.add_argument("--version", action="version", version=f"strom {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="walk through the seed document's example")
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from strom.node.demo import main as demo_main

    return demo_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

"""`strom console`: the web UI (node/console/), served by this process as a client of the
cluster. Its web dependencies are an extra; without them the command says how to install it.
"""

from __future__ import annotations

import argparse
from typing import Any

from strom.node.cli.common import CommandError
from strom.node.console import ConsoleError, add_arguments, run


def _console(args: argparse.Namespace) -> int:
    try:
        import aiohttp  # noqa: F401
        import jinja2  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"strom console needs the console extra ({exc.name} is not installed): "
            "pip install 'strom[console]'"
        ) from None
    try:
        return run(args)
    except ConsoleError as exc:
        raise CommandError(str(exc)) from None


def add_commands(sub: Any) -> None:
    console = sub.add_parser("console", help="a web UI: cluster, topics, messages, groups")
    add_arguments(console)
    console.set_defaults(handler=_console)

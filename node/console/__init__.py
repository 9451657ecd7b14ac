"""`strom console`: a web UI over a strom cluster (overview, topics, messages, consumer groups).

A separate process and a client of the cluster like any other: it reaches the cluster only
through the SDK (`strom.client`) and, for live rates, the nodes' admin HTTP listeners; it never
imports the node's own modules (tests/unit/test_layout.py enforces that). Its web dependencies
(aiohttp, Jinja2) are the `console` extra, imported only when the console starts.

Rooms: `app` (settings, middlewares, start/stop), `handlers` (pages and actions), `cluster`
(views of the cluster from the SDK), `messages` (browse, tail, produce), `render` (bytes as
text, input parsing), `sessions` (cookies, CSRF, sign-in), `rates` (admin listener sampling).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal

from strom.client.properties import read_client_properties

DEFAULT_PORT = 8080  # Kafka UIs' habit; clear of brokers (9092...), admin (9644) and Grafana (3000)


class ConsoleError(Exception):
    """A console setting cannot be used; printed as `error: ...`."""


def settings_from_args(args: argparse.Namespace) -> tuple[object, str, int, object]:
    """(ConsoleSettings, host, port, server SSL context or None) from the command line."""
    from .app import ConsoleSettings, server_ssl_context

    options = read_client_properties(args.command_config) if args.command_config else {}
    if "sasl_username" in options or "sasl_password" in options:
        raise ConsoleError(
            f"{args.command_config}: the console holds no cluster identity of its own; remove "
            "sasl.username and sasl.password (people sign in with their own users)"
        )
    listeners = tuple(
        a.strip() for item in args.admin_listener or [] for a in item.split(",") if a.strip()
    )
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise ConsoleError("--ssl-certfile and --ssl-keyfile go together")
    ssl_context = None
    if args.ssl_certfile:
        try:
            ssl_context = server_ssl_context(args.ssl_certfile, args.ssl_keyfile)
        except (OSError, ValueError) as exc:
            raise ConsoleError(f"cannot load the console's certificate: {exc}") from None
    if not 0 < args.port < 65536:
        raise ConsoleError(f"--port must be 1-65535, got {args.port}")
    settings = ConsoleSettings(
        bootstrap=args.bootstrap_server,
        options=options,
        read_only=args.read_only,
        admin_listeners=listeners,
        tls=ssl_context is not None,
    )
    return settings, args.host, args.port, ssl_context


def run(args: argparse.Namespace) -> int:
    from .app import serve

    settings, host, port, ssl_context = settings_from_args(args)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(settings, host, port, ssl_context)  # type: ignore[arg-type]

    asyncio.run(main())
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-server",
        default=os.environ.get("STROM_BOOTSTRAP_SERVER", "localhost:9092"),
        help="host:port[,host:port] (default: $STROM_BOOTSTRAP_SERVER or localhost:9092)",
    )
    parser.add_argument(
        "--command-config",
        metavar="FILE",
        help="client properties for reaching the cluster: security.protocol (SASL_* makes "
        "people sign in), ssl.ca.location, ssl.certificate.location, ssl.key.location",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--admin-listener",
        action="append",
        metavar="HOST:PORT",
        help="a node's admin listener, for live rates (repeat, or a comma list)",
    )
    parser.add_argument("--read-only", action="store_true", help="show everything, change nothing")
    parser.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--ssl-keyfile", help="and this key (PEM)")

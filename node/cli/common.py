"""What every command of the `strom` command line shares: the user-facing error, the connection
flags (`--bootstrap-server`, `--command-config`, `--output`) and what they become (SDK options,
an Admin), and argument checks made before any connection.

Credentials of the CLI itself come from the environment: STROM_SASL_USERNAME and
STROM_SASL_PASSWORD (and STROM_SASL_MECHANISM, default PLAIN); a `--command-config` file's
`sasl.*` settings win over them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

from strom.client.admin import Admin
from strom.client.properties import read_client_properties

Handler = Callable[[argparse.Namespace], int]

USERNAME_ENV = "STROM_SASL_USERNAME"
PASSWORD_ENV = "STROM_SASL_PASSWORD"
MECHANISM_ENV = "STROM_SASL_MECHANISM"

# Until some node answers, a command gives up after this long when no bootstrap address can be
# connected to (a wrong or dead address is reported in seconds, naming it, instead of after the
# request timeout); a cluster that answers slowly still gets the whole request timeout.
CLI_BOOTSTRAP_TIMEOUT_MS = 5_000


class CommandError(Exception):
    """A user-facing failure: printed as `error: ...`, exit status 1."""


def default_bootstrap() -> str:
    return os.environ.get("STROM_BOOTSTRAP_SERVER", "localhost:9092")


def client_credentials() -> dict[str, Any]:
    """SDK options for the CLI's own SASL login, from the environment; {} when not set."""
    username = os.environ.get(USERNAME_ENV)
    if not username:
        return {}
    return {
        "sasl_username": username,
        "sasl_password": os.environ.get(PASSWORD_ENV, ""),
        "sasl_mechanism": os.environ.get(MECHANISM_ENV, "PLAIN"),
    }


def connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """SDK keyword arguments from `--command-config` (security.protocol, ssl.*, sasl.*); a SASL
    login from the environment applies where the file gives none."""
    path = getattr(args, "command_config", None)
    options = read_client_properties(path) if path else {}
    if "sasl_username" not in options:
        options = {**client_credentials(), **options}
    return options


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """SDK keyword arguments of every client the CLI makes (Admin, producer, consumer): the
    connection settings and the short bootstrap timeout."""
    return {"bootstrap_timeout_ms": CLI_BOOTSTRAP_TIMEOUT_MS, **connection_options(args)}


def admin_client(args: argparse.Namespace) -> Admin:
    """An Admin for a client command's `--bootstrap-server` and `--command-config`."""
    return Admin(args.bootstrap_server, **client_options(args))


def command_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--command-config",
        metavar="FILE",
        help="client properties file: security.protocol, ssl.ca.location, "
        "ssl.certificate.location, ssl.key.location",
    )


def client_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of every command that talks to a cluster as a client."""
    p.add_argument(
        "--bootstrap-server",
        default=default_bootstrap(),
        help="host:port[,host:port] (default: $STROM_BOOTSTRAP_SERVER or localhost:9092)",
    )
    p.add_argument("--output", choices=("text", "json"), default="text")
    command_config_argument(p)
    return p


def key_values(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"{flag} expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def count(text: str) -> int:
    """An argparse type: a count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def count_or_default(text: str) -> int:
    """An argparse type: a count of at least 1, or -1 for the broker's default."""
    if text.strip() == "-1":
        return -1
    try:
        return count(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or -1: the broker's default)") from None

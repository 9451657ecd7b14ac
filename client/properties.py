"""Kafka-style client properties files (`--command-config FILE`), mapped to SDK options.

Format, as Java's `.properties` and Kafka's tools use it: one `key=value` (or `key: value`) per
line; blank lines and lines starting with `#` or `!` are ignored; whitespace around keys and
values is dropped. Keys are Kafka's client config names; `CLIENT_PROPERTIES` maps each to the
keyword argument of Producer/Consumer/Admin it sets. An unknown key is an error naming the file,
the line and the known keys, so a typo never silently leaves a connection in plaintext.
A relative path in a file (`ssl.ca.location=ca.crt`) is relative to the file's own folder, so
one file with its certificates beside it works wherever the folder is mounted.

Values are never echoed in errors: a properties file may hold secrets.
"""

from __future__ import annotations

from pathlib import Path

from strom.v1 import common_pb2

from .errors import FatalError

# Kafka property -> SDK keyword argument.
CLIENT_PROPERTIES: dict[str, str] = {
    "security.protocol": "security_protocol",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
}
# Properties whose values are file paths (resolved against the file's folder).
PATH_PROPERTIES = frozenset({"ssl.ca.location", "ssl.certificate.location", "ssl.key.location"})


def _problem(source: str, line_no: int, message: str) -> FatalError:
    return FatalError(common_pb2.INVALID_CONFIG, f"{source}:{line_no}: {message}")


def parse_client_properties(
    text: str, source: str = "<properties>", base: Path | None = None
) -> dict[str, str]:
    """SDK keyword arguments from the text of a properties file; relative paths are taken
    relative to `base` when given."""
    options: dict[str, str] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        separators = [i for i in (line.find("="), line.find(":")) if i > 0]
        if not separators:
            raise _problem(source, line_no, "expected key=value")
        cut = min(separators)
        key, value = line[:cut].strip(), line[cut + 1 :].strip()
        if key not in CLIENT_PROPERTIES:
            raise _problem(
                source,
                line_no,
                f"unknown property {key!r}; known: {', '.join(sorted(CLIENT_PROPERTIES))}",
            )
        name = CLIENT_PROPERTIES[key]
        if name in options:
            raise _problem(source, line_no, f"{key} is set twice")
        if key in PATH_PROPERTIES and base is not None and value:
            value = str(base / Path(value).expanduser())
        options[name] = value
    return options


def read_client_properties(path: str | Path) -> dict[str, str]:
    """SDK keyword arguments from a properties file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise FatalError(common_pb2.INVALID_CONFIG, f"cannot read {path}: {exc.strerror}") from None
    return parse_client_properties(text, str(path), Path(path).parent)

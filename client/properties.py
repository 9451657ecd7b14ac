r"""Kafka-style client properties files (`--command-config FILE`), mapped to SDK options.

Format: Java's `.properties`, as Kafka's tools read it, parsed by `javaproperties` (PyPI):
`key=value`, `key: value` or `key value`; `#` and `!` comments; a `\` at the end of a line
continues the value on the next (long values split over lines); `\uXXXX` and the other
Java escapes. A key alone, with no separator and no value, is refused as a likely typo. Keys are
Kafka's client config names; `CLIENT_PROPERTIES` maps each to the
keyword argument of Producer/Consumer/Admin it sets. An unknown key is an error naming the file,
the line and the known keys, so a typo never silently leaves a connection in plaintext.
A relative path in a file (`ssl.ca.location=ca.crt`) is relative to the file's own folder, so
one file with its certificates beside it works wherever the folder is mounted.

Values are never echoed in errors: a properties file may hold secrets.
"""

from __future__ import annotations

from pathlib import Path

import javaproperties

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
    line_no = 1  # where the entry being read starts
    for entry in javaproperties.parse(text):
        start, line_no = line_no, line_no + entry.source.count("\n")
        if not isinstance(entry, javaproperties.KeyValue):
            continue  # a comment, a blank line
        key, value = entry.key, entry.value
        if key not in CLIENT_PROPERTIES:
            raise _problem(
                source,
                start,
                f"unknown property {key!r}; known: {', '.join(sorted(CLIENT_PROPERTIES))}",
            )
        if not value and entry.source.strip() == key:
            raise _problem(source, start, "expected key=value")
        name = CLIENT_PROPERTIES[key]
        if name in options:
            raise _problem(source, start, f"{key} is set twice")
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

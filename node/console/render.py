"""How the console shows bytes and reads what people type: pure functions, no I/O.

Record keys, values and header values are arbitrary bytes. `render_bytes` turns them into text
for a page in one of four ways:

- `auto`: pretty JSON when the bytes are UTF-8 that parses as a JSON object or array; plain text
  when they are UTF-8 without control characters (tabs and newlines allowed); hex otherwise.
- `json`: pretty JSON when it parses, else the `auto` rendering with a note saying it did not.
- `text`: UTF-8, undecodable bytes shown as U+FFFD, with a note when there were any.
- `hex`: a hexdump (offset, 16 bytes, their printable ASCII).

Every rendering is capped: at most `cap_bytes` of the value are rendered (and the rendered text
is cut at `cap_bytes` characters), and the result says it was truncated and how large the value
really was. JSON is parsed from the whole value only up to `JSON_PARSE_BYTES_MAX`.

The `parse_*` functions check form and query input and raise `InputError` with a message a
person can act on; the console shows it on the page (never a stack trace).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

RENDER_MODES = ("auto", "json", "text", "hex")
CAP_BYTES_DEFAULT = 16 * 1024
CAP_BYTES_MAX = 1024 * 1024
JSON_PARSE_BYTES_MAX = 4 * 1024 * 1024
HEX_LINE_BYTES = 16
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class InputError(ValueError):
    """Something a person typed cannot be used; the message says what and how to fix it."""


@dataclass(frozen=True, slots=True)
class Rendered:
    kind: str  # "json", "text", "hex" or "null"
    text: str
    size_bytes: int  # of the whole value (0 for null)
    truncated: bool = False
    note: str = ""  # e.g. "not valid JSON: shown as text"


def render_bytes(
    data: bytes | None, mode: str = "auto", cap_bytes: int = CAP_BYTES_DEFAULT
) -> Rendered:
    """`data` as text for a page, by `mode` (RENDER_MODES), capped at `cap_bytes`."""
    if mode not in RENDER_MODES:
        raise InputError(f"render must be one of {', '.join(RENDER_MODES)}, got {mode!r}")
    if data is None:
        return Rendered("null", "null", 0)
    if mode == "hex":
        return _hex(data, cap_bytes)
    if mode == "text":
        text = _text(data, cap_bytes, strict=False)
        assert text is not None  # only strict decoding gives up
        return text
    parsed = _json(data, cap_bytes)
    if parsed is not None:
        return parsed
    fallback = _text(data, cap_bytes, strict=True) or _hex(data, cap_bytes)
    if mode == "json":
        return Rendered(
            fallback.kind,
            fallback.text,
            fallback.size_bytes,
            fallback.truncated,
            f"not valid JSON: shown as {fallback.kind}",
        )
    return fallback


def _cut(text: str, cap_chars: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= cap_chars else (text[:cap_chars], True)


def _json(data: bytes, cap_bytes: int) -> Rendered | None:
    if len(data) > JSON_PARSE_BYTES_MAX or data.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    text, truncated = _cut(json.dumps(value, indent=2, ensure_ascii=False), cap_bytes)
    return Rendered("json", text, len(data), truncated)


def _text(data: bytes, cap_bytes: int, strict: bool) -> Rendered | None:
    """UTF-8 text; with `strict`, None when the bytes are not UTF-8 or hold control characters
    (the hex view shows those better)."""
    head = data[:cap_bytes]
    try:
        text = head.decode("utf-8")
        note = ""
    except UnicodeDecodeError as exc:
        # A cap may split a multi-byte character: that alone is not "binary".
        if exc.start >= len(head) - 3 and len(data) > cap_bytes:
            text, note = head[: exc.start].decode("utf-8", errors="replace"), ""
        elif strict:
            return None
        else:
            text, note = (
                head.decode("utf-8", errors="replace"),
                "not valid UTF-8: bad bytes shown as �",
            )
    if strict and _CONTROL.search(text):
        return None
    return Rendered("text", text, len(data), len(data) > cap_bytes, note)


def _hex(data: bytes, cap_bytes: int) -> Rendered:
    head = data[: max(HEX_LINE_BYTES, cap_bytes // 4)]  # a hexdump line is ~4.3x its bytes
    lines = []
    for start in range(0, len(head), HEX_LINE_BYTES):
        chunk = head[start : start + HEX_LINE_BYTES]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:08x}  {hexes:<{HEX_LINE_BYTES * 3 - 1}}  {ascii_}")
    return Rendered("hex", "\n".join(lines), len(data), len(head) < len(data))


# ---- numbers and times for people ------------------------------------------------------------


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_time_ms(timestamp_ms: int) -> str:
    if timestamp_ms < 0:
        return "—"
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{timestamp_ms % 1000:03d} UTC"


# ---- input -----------------------------------------------------------------------------------


def parse_int(text: str | None, what: str, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number typed by a person, within bounds."""
    raw = (text or "").strip()
    if not re.fullmatch(r"-?\d{1,19}", raw):
        raise InputError(
            f"{what} must be a whole number, got {raw!r}" if raw else f"{what} is empty"
        )
    value = int(raw)
    if value < minimum:
        raise InputError(f"{what} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InputError(f"{what} must be at most {maximum}, got {value}")
    return value


def parse_timestamp_ms(text: str | None) -> int:
    """Milliseconds since the epoch, from a number of milliseconds or an ISO 8601 date and
    time (what a datetime-local field sends; without a zone it is taken as UTC)."""
    raw = (text or "").strip()
    if not raw:
        raise InputError("timestamp is empty: give a date and time, or milliseconds since 1970")
    if re.fullmatch(r"\d{1,16}", raw):
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(
            f"timestamp {raw!r} is neither milliseconds since 1970 nor an ISO date and time "
            "(e.g. 2026-11-27T10:00:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp() * 1000)


def parse_headers(text: str | None) -> list[tuple[str, bytes]]:
    """Record headers from a form, one `name: value` per line."""
    headers = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise InputError(f"header line {number} must look like 'name: value', got {line!r}")
        headers.append((name.strip(), value.strip().encode()))
    return headers


def parse_config_items(text: str | None) -> dict[str, str]:
    """Topic configs from a form, one `key=value` per line."""
    configs = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InputError(f"config line {number} must look like 'key=value', got {line!r}")
        configs[key.strip()] = value.strip()
    return configs

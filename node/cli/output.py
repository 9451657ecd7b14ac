"""Output of the command line tools: tables whose columns fit their data, and JSON for
`--output json`.

Columns are as wide as their widest cell (header included) plus two spaces, as Kafka's tools
print them, so a long topic, group or member id never pushes the next column out of line; the
last column is not padded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

GAP = 2


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = []
    for line in cells:
        padded = [cell.ljust(width + GAP) for cell, width in zip(line[:-1], widths, strict=False)]
        lines.append(("".join(padded) + line[-1]).rstrip())
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(format_table(headers, rows))


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))

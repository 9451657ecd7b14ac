"""Pure helpers for the side-by-side benchmarks (bench/peers.py): collecting rates, medians,
ratios and the Markdown tables. No I/O here, so tests/unit can check it without servers.

A measure is a named list of rates (records/s, one per run); its figure is the median. A ratio
column compares a reference measure (a strom one) to each row: `reference median ÷ row median`,
so a ratio above 1 means strom is faster than that row. A measure that could not run is kept as
a one-line reason and printed under the tables instead of a row.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PRODUCE = "produce"
CONSUME = "consume"


@dataclass(frozen=True, slots=True)
class RatioColumn:
    """A ratio column: the median of measure `reference_key` divided by each row's median."""

    reference_key: str
    header: str


@dataclass(slots=True)
class Results:
    """Rates per measure, in the order measures were first seen, plus skip reasons."""

    record_bytes: int
    labels: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    rates: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, label: str, kind: str, records_per_s: float) -> None:
        assert kind in (PRODUCE, CONSUME), kind
        self.labels[key] = label
        self.kinds[key] = kind
        self.rates.setdefault(key, []).append(records_per_s)

    def skip(self, label: str, reason: str) -> None:
        self.skipped[label] = reason

    def median(self, key: str) -> float | None:
        rates = self.rates.get(key)
        return statistics.median(rates) if rates else None


def format_ratio(reference: float | None, value: float | None) -> str:
    """`reference ÷ value` as `1.23×`; a dash where either side is missing or zero."""
    if reference is None or value is None or value <= 0:
        return "–"
    ratio = reference / value
    # Two significant digits below 0.1, so that ceilings far above strom do not read 0.00×.
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×"


def format_rate(records_per_s: float) -> str:
    return f"{records_per_s:,.0f}"


def format_mb(records_per_s: float, record_bytes: int) -> str:
    """Payload megabytes (10^6 bytes) per second: record value bytes only, no framing."""
    return f"{records_per_s * record_bytes / 1e6:.1f}"


def format_spread(rates: Sequence[float]) -> str:
    """min–max of the runs, in thousands of records/s, to show the noise next to the median."""
    if len(rates) < 2:
        return "–"
    return f"{min(rates) / 1e3:,.0f}k–{max(rates) / 1e3:,.0f}k"


def render_table(results: Results, kind: str, columns: Iterable[RatioColumn]) -> list[str]:
    """The Markdown lines of one table (rows of `kind`), or no lines if it has no rows."""
    columns = list(columns)
    keys = [k for k in results.rates if results.kinds[k] == kind]
    if not keys:
        return []
    header = ["measure", "records/s (median)", "MB/s", "runs min–max", *(c.header for c in columns)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for key in keys:
        median = results.median(key)
        assert median is not None
        cells = [
            results.labels[key],
            format_rate(median),
            format_mb(median, results.record_bytes),
            format_spread(results.rates[key]),
            *(format_ratio(results.median(c.reference_key), median) for c in columns),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_skipped(results: Results) -> list[str]:
    return [f"- skipped: {label} — {reason}" for label, reason in results.skipped.items()]

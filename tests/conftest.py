"""Project-wide pytest options.

`--seed N` replays one simulation seed (tests/sim). Slow tests are skipped unless `--run-slow`;
`--slow-sample K` runs K of them, drawn by `--slow-sample-seed` (default: the day, printed), so CI
covers a bounded, rotating, reproducible sample of the slow suites. Slow tests also marked
`exhaustive` (chunks that cost minutes each) are never sampled: only `--run-slow` runs them.
"""

from __future__ import annotations

import datetime
import random

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seed", type=int, default=None, help="replay one simulation seed")
    parser.addoption("--run-slow", action="store_true", help="run every slow test")
    parser.addoption(
        "--slow-sample", type=int, default=0, help="run this many slow tests, drawn by seed"
    )
    parser.addoption(
        "--slow-sample-seed",
        type=int,
        default=None,
        help="seed of the slow sample (default: today)",
    )


def _slow_sample_seed(config: pytest.Config) -> int:
    seed: int | None = config.getoption("--slow-sample-seed")
    if seed is None:
        seed = int(datetime.date.today().strftime("%Y%m%d"))
    return seed


def pytest_report_header(config: pytest.Config) -> str:
    if config.getoption("--run-slow"):
        return "slow tests: all"
    return (
        f"slow tests: sample of {config.getoption('--slow-sample')} "
        f"(--slow-sample-seed={_slow_sample_seed(config)})"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: not in this run's sample (use --run-slow)")
    slow = []
    for item in items:
        if item.get_closest_marker("exhaustive"):
            item.add_marker(skip)
        elif item.get_closest_marker("slow"):
            slow.append(item)
    sample_size = min(config.getoption("--slow-sample"), len(slow))
    chosen = set(random.Random(_slow_sample_seed(config)).sample(range(len(slow)), sample_size))
    for index, item in enumerate(slow):
        if index not in chosen:
            item.add_marker(skip)

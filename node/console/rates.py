"""Live rates from the nodes' admin listeners (`admin.listener`, GET /metrics).

`RateSampler` owns one background task that scrapes every configured listener each
`interval_s`, keeps the previous sample per listener, and publishes rates: messages in, bytes in
and bytes out per second, cluster-wide and per topic (a node's counters count what it did as a
leader, so the sum over nodes is the cluster's). A counter that went down (the node restarted)
gives no rate for that interval. `rates_between` is the pure core. Nobody watching (no
`wanted()` for `IDLE_AFTER_S`), nothing is scraped: the nodes do no work for an unread page.

The admin listeners serve metrics without authentication, so the console decides what to show:
per-topic rates only for topics the person may describe, totals only to those who may describe
the cluster (node/console/app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("strom.console.rates")

MESSAGES_IN = "strom_server_brokertopicmetrics_messagesin"
BYTES_IN = "strom_server_brokertopicmetrics_bytesin"
BYTES_OUT = "strom_server_brokertopicmetrics_bytesout"
SCRAPE_TIMEOUT_S = 2.0
METRICS_BYTES_MAX = 8 * 1024 * 1024
IDLE_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One listener's counters at one moment: name -> topic -> total."""

    at_s: float
    counters: dict[str, dict[str, float]]


@dataclass(frozen=True, slots=True)
class Rates:
    messages_in_per_s: float = 0.0
    bytes_in_per_s: float = 0.0
    bytes_out_per_s: float = 0.0
    messages_in_per_s_by_topic: dict[str, float] = field(default_factory=dict)
    listeners_ok: int = 0
    problems: tuple[str, ...] = ()


def parse_sample(text: str, at_s: float) -> Sample:
    counters: dict[str, dict[str, float]] = {MESSAGES_IN: {}, BYTES_IN: {}, BYTES_OUT: {}}
    for family in text_string_to_metric_families(text):
        # The parser names a counter family without `_total`, unless the text lacks its TYPE.
        name = family.name.removesuffix("_total")
        if name not in counters:
            continue
        for s in family.samples:
            if s.name.endswith("_total"):
                topic = s.labels.get("topic", "")
                counters[name][topic] = counters[name].get(topic, 0.0) + s.value
    return Sample(at_s, counters)


def rates_between(pairs: Sequence[tuple[Sample, Sample]]) -> Rates:
    """Cluster rates from (previous, current) samples of each listener."""
    totals = {MESSAGES_IN: 0.0, BYTES_IN: 0.0, BYTES_OUT: 0.0}
    by_topic: dict[str, float] = {}
    for before, after in pairs:
        elapsed = after.at_s - before.at_s
        if elapsed <= 0:
            continue
        for name in totals:
            for topic, value in after.counters.get(name, {}).items():
                delta = value - before.counters.get(name, {}).get(topic, 0.0)
                if delta < 0:
                    continue  # the node restarted: its counters began again
                totals[name] += delta / elapsed
                if name == MESSAGES_IN:
                    by_topic[topic] = by_topic.get(topic, 0.0) + delta / elapsed
    return Rates(totals[MESSAGES_IN], totals[BYTES_IN], totals[BYTES_OUT], by_topic, len(pairs))


class RateSampler:
    def __init__(
        self,
        listeners: Sequence[str],
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listeners = list(listeners)
        self.interval_s = interval_s
        self.clock = clock
        self.rates = Rates()
        self._last: dict[str, Sample] = {}
        self._task: asyncio.Task[None] | None = None
        self._wanted_at_s = clock()

    def wanted(self) -> Rates:
        """The latest rates, and a note that someone is looking (keeps sampling on)."""
        self._wanted_at_s = self.clock()
        return self.rates

    @property
    def configured(self) -> bool:
        return bool(self.listeners)

    def start(self) -> None:
        if self.listeners and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="console-rates")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                if self.clock() - self._wanted_at_s < IDLE_AFTER_S:
                    await self.sample_once(http)
                else:
                    self._last.clear()  # a rate must not span the idle gap
                    self.rates = Rates()
                await asyncio.sleep(self.interval_s)

    async def sample_once(self, http: aiohttp.ClientSession) -> None:
        results = await asyncio.gather(*(self._scrape(http, a) for a in self.listeners))
        pairs, problems = [], []
        for address, result in zip(self.listeners, results, strict=True):
            if isinstance(result, str):
                problems.append(f"{address}: {result}")
                self._last.pop(address, None)
                continue
            before = self._last.get(address)
            self._last[address] = result
            if before is not None:
                pairs.append((before, result))
        rates = rates_between(pairs)
        self.rates = Rates(
            rates.messages_in_per_s,
            rates.bytes_in_per_s,
            rates.bytes_out_per_s,
            rates.messages_in_per_s_by_topic,
            len(pairs),
            tuple(problems),
        )

    async def _scrape(self, http: aiohttp.ClientSession, address: str) -> Sample | str:
        url = address if "://" in address else f"http://{address}"
        try:
            async with http.get(f"{url.rstrip('/')}/metrics") as response:
                if response.status != 200:
                    return f"HTTP {response.status}"
                body = await response.content.read(METRICS_BYTES_MAX)
            return parse_sample(body.decode(errors="replace"), self.clock())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"unreachable ({type(exc).__name__})"
        except ValueError as exc:
            log.warning("cannot parse metrics from %s: %s", address, exc)
            return "unparsable metrics"

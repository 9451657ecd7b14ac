"""Unary calls against bidirectional streams for Produce and Fetch, side by side in one run.

    cd bench && ../.venv/bin/python stream_rpc.py [--records 300000] [--rounds 3]

One local three-node cluster. Every measure runs `strom perf ... --output json` as its own
process (the client alone in it, as a user runs it) once with `--rpc unary` (a gRPC call per
produce request and per fetch: what main did before the streams) and once with `--rpc stream`
(one stream per client and broker), alternately, `--rounds` times, so drift on a shared machine
hits both. SDK defaults throughout, 100-byte records:

- produce RF=3 acks=all and RF=1 acks=1 (3 partitions; records/s, the producer's p50/p99),
- consume a topic of `--consume-records` records, RF=3 (records/s),
- end-to-end at 10,000 records/s, RF=3 acks=all, on 1 and on 3 partitions (p50/p99 from send
  to poll; the rate actually kept).

Every topic is created, and written to, before the first measure (until the replica fetcher
abandoned its long-poll for a newly added partition, a follower took up a new partition up to
500 ms later, and that one-off wait landed in whichever measure met it first; topic creation
is still not what is compared here). Medians with min–max; the 1-minute load average before
each measure is printed, since the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port

MODES = ("unary", "stream")
STROM = str(Path(sys.executable).with_name("strom"))


def load() -> float:
    return os.getloadavg()[0]


def perf(bootstrap: str, *args: str) -> dict[str, Any]:
    command = [STROM, "perf", *args, "--bootstrap-server", bootstrap, "--output", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--consume-records", type=int, default=1_000_000)
    parser.add_argument("--e2e-records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--e2e-only", action="store_true", help="only the end-to-end measures")
    parser.add_argument(
        "--producer-props", nargs="*", default=[], metavar="KEY=VALUE",
        help="for the produce and end-to-end measures (default: the SDK's defaults)",
    )  # fmt: skip
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strom-stream-bench-", dir="."))
    cluster = LocalCluster(root / "cluster")
    cluster.create(3, free_base_port(3), {"log.level": "WARNING"})
    # measure -> mode -> list of (value, p50, p99, load)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}

    def record(measure: str, mode: str, row: dict[str, float]) -> None:
        results.setdefault(measure, {m: [] for m in MODES})[mode].append(row)
        print(f"{measure} [{mode}]: {row}", file=sys.stderr, flush=True)

    try:
        cluster.up()
        bootstrap = cluster.bootstrap()
        wait_until_healthy(bootstrap, [1, 2, 3], 60, {})
        # The consume topic, written once (unary and stream read the same records).
        if not args.e2e_only:
            perf(bootstrap, "produce", "--topic", "fill", "--create-topic", "3:3",
                 "--num-records", str(args.consume_records), "--acks", "1")  # fmt: skip
        # Every topic is created and written to before any measure, so that topic creation
        # (and, before the fetcher's fix, a follower's wait of up to replica.fetch.wait.max.ms
        # to take up a new partition) lands in no measure.
        topics = [(f"e{r}{m}{p}", f"{p}:3") for r in range(args.rounds) for m in MODES
                  for p in (1, 3)]  # fmt: skip
        if not args.e2e_only:
            topics += [(f"p{r}{m}{acks}", spec) for r in range(args.rounds) for m in MODES
                       for acks, spec in (("all", "3:3"), ("1", "3:1"))]  # fmt: skip
        for topic, spec in topics:
            perf(bootstrap, "produce", "--topic", topic, "--create-topic", spec,
                 "--num-records", "100", "--acks", "all")  # fmt: skip
        for rnd in range(args.rounds):
            for mode in MODES if rnd % 2 == 0 else reversed(MODES):
                rpc = ("--rpc", mode)
                props = ("--producer-props", *args.producer_props) if args.producer_props else ()
                throughput = () if args.e2e_only else (("produce RF=3 acks=all", "3:3", "all"),
                                                        ("produce RF=1 acks=1", "3:1", "1"))  # fmt: skip
                for name, _spec, acks in throughput:
                    before = load()
                    out = perf(bootstrap, "produce", "--topic", f"p{rnd}{mode}{acks}",
                               "--num-records", str(args.records), "--acks", acks,
                               *rpc, *props)  # fmt: skip
                    record(name, mode, {"value": out["records_per_sec"], "p50": out["p50_ms"],
                                        "p99": out["p99_ms"], "load": before})  # fmt: skip
                if not args.e2e_only:
                    before = load()
                    out = perf(bootstrap, "consume", "--topic", "fill",
                               "--messages", str(args.consume_records), *rpc)  # fmt: skip
                    record("consume RF=3", mode, {"value": out["nmsg_sec"], "mb": out["mb_sec"],
                                                  "load": before})  # fmt: skip
                for parts in (1, 3):
                    before = load()
                    out = perf(bootstrap, "end-to-end", "--topic", f"e{rnd}{mode}{parts}",
                               "--num-records", str(args.e2e_records),
                               "--throughput", "10000", "--acks", "all", *rpc, *props)  # fmt: skip
                    record(f"end-to-end 10k/s RF=3, {parts} partition(s)", mode,
                           {"value": out["records_per_sec"], "p50": out["p50_ms"],
                            "p99": out["p99_ms"], "p95": out["p95_ms"],
                            "max": out["max_latency_ms"], "load": before})  # fmt: skip
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n`{' '.join(sys.argv)}`, medians of {args.rounds} (min–max)\n")
    print("| measure | unary | stream | stream ÷ unary |")
    print("|---|---|---|---:|")

    def span(rows: list[dict[str, float]], key: str) -> tuple[float, str]:
        values = [r[key] for r in rows]
        return statistics.median(values), f"{min(values):,.1f}–{max(values):,.1f}"

    for measure, by_mode in results.items():
        cells = []
        for mode in MODES:
            value, value_span = span(by_mode[mode], "value")
            cell = f"{value:,.0f} rec/s ({value_span})"
            if "p99" in by_mode[mode][0]:
                p50, _ = span(by_mode[mode], "p50")
                p99, p99_span = span(by_mode[mode], "p99")
                cell += f", p50 {p50:.1f} ms, p99 {p99:.1f} ms ({p99_span})"
            cells.append(cell)
        ratio = statistics.median(r["value"] for r in by_mode["stream"]) / statistics.median(
            r["value"] for r in by_mode["unary"]
        )
        print(f"| {measure} | {cells[0]} | {cells[1]} | {ratio:.2f}× |")
    loads = [r["load"] for m in results.values() for rows in m.values() for r in rows]
    print(f"\n1-minute load average before the measures: {min(loads):.1f}–{max(loads):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

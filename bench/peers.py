"""strom side by side with its ceilings and peers, on this machine, in one invocation.

    make bench-peers                       # installs the `bench` extra and the servers, runs this
    .venv/bin/python bench/peers.py [--records 100000] [--runs 3] [--only strom,nats,redis,file]

Every measure moves `--records` records of 100 bytes, counts only acknowledged publishes
(async, many in flight), and is repeated `--runs` times (at least 3 for RESULTS.md); the table
shows the median, the min–max of the runs, and the ratio strom ÷ row for each strom reference
(above 1: strom is faster). Systems run one after another, each with only its own servers up:

- file: a plain file append of the same bytes in 1,000-record batches, fsync off (page cache
  only), and with one fsync per batch (bench/ceilings.py);
- strom: a local three-node cluster (bench/peer_strom.py); produce RF=3 acks=all idempotent and
  RF=1 acks=1 through `strom perf produce --output json` when that CLI exists, else
  bench/cluster_bench.py's produce() in this process; consume of the RF=3 topic the same way;
  and the raw gRPC ceiling (pre-encoded batches, no SDK) at RF=1 acks=1 and RF=3 acks=all;
- nats: Debian's nats-server, a 3-node JetStream cluster with an R3 stream and a 1-node R1
  variant, file storage; nats-py publishes pipelined with a PubAck checked per message, and
  with nats-py's own `js.publish_async`; an ordered push consumer and a pull consumer
  (bench/peer_nats.py);
- redis: Debian's redis-server, XADD in pipelines of 1,000 with redis-py, appendonly with
  `appendfsync everysec`, and with no persistence; XREAD COUNT 1,000 (bench/peer_redis.py).

A system whose server or client is not installed is skipped with a one-line reason, as is one
that fails; the others still run. Servers listen on free loopback ports, keep their data in a
temp dir, and are always stopped (also on Ctrl-C or SIGTERM); the temp dir is removed.

Output: Markdown on stdout (machine, versions, tables) to paste into bench/RESULTS.md;
progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_report as report
import ceilings
import peer_nats
import peer_redis
import peer_strom
from bench_procs import ProcessGroup, exit_on_signals
from bench_report import CONSUME, PRODUCE, RatioColumn, Results

RECORD_BYTES = peer_strom.RECORD_BYTES  # 100
SYSTEMS = ("file", "strom", "nats", "redis")
PRODUCE_COLUMNS = (
    RatioColumn("strom.rf3", "strom RF=3 acks=all ÷ this"),
    RatioColumn("strom.rf1", "strom RF=1 acks=1 ÷ this"),
)
CONSUME_COLUMNS = (RatioColumn("strom.consume", "strom consume ÷ this"),)


@dataclass(frozen=True, slots=True)
class Context:
    args: argparse.Namespace
    root: Path
    results: Results

    def measure(
        self, key: str, label: str, kind: str, run: int, fn: Callable[..., float], *fn_args: Any
    ) -> None:
        """One run of one measure: `fn(*fn_args)` returns records/s."""
        rate = fn(*fn_args)
        self.results.add(key, label, kind, rate)
        print(f"run {run}: {label}: {rate:,.0f} records/s", file=sys.stderr, flush=True)


def bench_file(ctx: Context) -> None:
    n, batch = ctx.args.records, ctx.args.file_batch_records
    directory = ctx.root / "file"
    directory.mkdir()
    label = f"ceiling: plain file append, {batch:,}-record batches"
    for run in range(ctx.args.runs):
        ctx.measure(
            "file.nosync", f"{label}, fsync off (page cache only)", PRODUCE, run,
            ceilings.file_append, directory, n, RECORD_BYTES, batch, False,
        )  # fmt: skip
        ctx.measure(
            "file.fsync", f"{label}, fsync after each batch", PRODUCE, run,
            ceilings.file_append, directory, n, RECORD_BYTES, batch, True,
        )  # fmt: skip


def bench_strom(ctx: Context) -> None:
    n, m = ctx.args.records, ctx.measure
    raw = "ceiling: raw gRPC Produce to strom, pre-encoded 2,500-record batches,"
    with peer_strom.local_cluster(ctx.root / "strom") as bootstrap:
        strom = peer_strom.Strom(bootstrap)
        for run in range(ctx.args.runs):
            asyncio.run(peer_strom.create_topics(bootstrap, run))
            m("strom.rf3", "**strom** produce RF=3 acks=all idempotent", PRODUCE, run,
              strom.produce, f"rf3-{run}", n, "all")  # fmt: skip
            m("strom.rf1", "**strom** produce RF=1 acks=1", PRODUCE, run,
              strom.produce, f"rf1-{run}", n, "1")  # fmt: skip
            if not ctx.args.no_consume:
                m("strom.consume", "**strom** consume (RF=3 topic, records from poll())",
                  CONSUME, run, strom.consume, f"rf3-{run}", n)  # fmt: skip
            m("strom.raw1", f"{raw} RF=1 acks=1", PRODUCE, run,
              strom.raw_grpc, f"raw1-{run}", n, 1)  # fmt: skip
            m("strom.raw3", f"{raw} RF=3 acks=all", PRODUCE, run,
              strom.raw_grpc, f"raw3-{run}", n, -1)  # fmt: skip
    via = ", ".join(sorted(strom.via))
    print(f"strom measured via: {via}", file=sys.stderr)
    ctx.results.notes.append(f"strom produce/consume measured via {via}")


def _nats_produce(servers: str, run: int, n: int, replicas: int, window: int, mode: str) -> float:
    return asyncio.run(peer_nats.produce(servers, run, n, replicas, RECORD_BYTES, window, mode))


def _nats_consume(servers: str, run: int, n: int, mode: str, how: str, batch: int) -> float:
    return asyncio.run(peer_nats.consume(servers, run, n, mode, how, batch))


def _bench_nats_variant(ctx: Context, nodes: int) -> None:
    n, window, batch = ctx.args.records, ctx.args.nats_window, ctx.args.consume_batch
    key, name = f"nats.r{nodes}", f"NATS JetStream {nodes} node{'s' * (nodes > 1)} R{nodes}"
    pipelined, publish_async = peer_nats.PIPELINED, peer_nats.PUBLISH_ASYNC
    with ProcessGroup() as group:
        servers = peer_nats.start_cluster(group, ctx.root / f"nats{nodes}", nodes)
        for run in range(ctx.args.runs):
            ctx.measure(
                key, f"{name}, file storage, nats-py pipelined publish + PubAck per message "
                f"({window:,} in flight)", PRODUCE, run,
                _nats_produce, servers, run, n, nodes, window, pipelined,
            )  # fmt: skip
            ctx.measure(
                f"{key}.async", f"{name}, file storage, nats-py js.publish_async "
                f"({window:,} in flight)", PRODUCE, run,
                _nats_produce, servers, run, n, nodes, window, publish_async,
            )  # fmt: skip
            if not ctx.args.no_consume:
                ctx.measure(
                    f"{key}.push", f"{name}, ordered push consumer (no acks)", CONSUME, run,
                    _nats_consume, servers, run, n, pipelined, peer_nats.PUSH, batch,
                )  # fmt: skip
                ctx.measure(
                    f"{key}.pull", f"{name}, pull consumer fetch({batch:,}), AckPolicy none",
                    CONSUME, run,
                    _nats_consume, servers, run, n, publish_async, peer_nats.PULL, batch,
                )  # fmt: skip
            for mode in (pipelined, publish_async):
                asyncio.run(peer_nats.delete_stream(servers, run, mode))


def bench_nats(ctx: Context) -> None:
    _bench_nats_variant(ctx, 3)
    _bench_nats_variant(ctx, 1)


def _bench_redis_variant(ctx: Context, aof: bool) -> None:
    n, pipeline, batch = ctx.args.records, ctx.args.redis_pipeline, ctx.args.consume_batch
    key = "redis.aof" if aof else "redis.none"
    how = "appendonly yes, appendfsync everysec" if aof else "no persistence"
    with ProcessGroup() as group:
        port = peer_redis.start_server(group, ctx.root / key, aof)
        for run in range(ctx.args.runs):
            ctx.measure(
                key, f"Redis Streams XADD, redis-py pipeline of {pipeline:,}, {how}", PRODUCE,
                run, peer_redis.produce, port, run, n, RECORD_BYTES, pipeline,
            )  # fmt: skip
            if aof and not ctx.args.no_consume:
                ctx.measure(
                    f"{key}.consume", f"Redis Streams XREAD COUNT {batch:,}", CONSUME, run,
                    peer_redis.consume, port, run, n, batch,
                )  # fmt: skip


def bench_redis(ctx: Context) -> None:
    _bench_redis_variant(ctx, aof=True)
    _bench_redis_variant(ctx, aof=False)


RUNNERS: dict[str, tuple[Callable[[Context], None], Callable[[], str | None]]] = {
    "file": (bench_file, lambda: None),
    "strom": (bench_strom, lambda: None),
    "nats": (bench_nats, peer_nats.available),
    "redis": (bench_redis, peer_redis.available),
}


def _first_line(argv: list[str], otherwise: str = "not installed") -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return otherwise


def _package(name: str) -> str:
    try:
        return f"{name} {importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{name} not installed"


def machine_lines(load_before: tuple[float, ...]) -> list[str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor() or "unknown",
    )  # fmt: skip
    load_after = os.getloadavg()
    return [
        f"- Command: `{' '.join(['.venv/bin/python', *sys.argv])}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: `{_first_line(['uname', '-a'], ' '.join(platform.uname()))}`; "
        f"nproc {os.cpu_count()}; CPU model {cpu}",
        f"- Load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}",
        f"- Python {platform.python_version()}; {_first_line(['nats-server', '--version'])}; "
        f"{_first_line(['redis-server', '--version'])}; {_package('nats-py')}; {_package('redis')}",
    ]


def render(results: Results, args: argparse.Namespace, load: tuple[float, ...]) -> str:
    lines = [*machine_lines(load)]
    lines.append(
        f"- {args.records:,} records of {RECORD_BYTES} B per measure; median of {args.runs} "
        "runs; ratio = strom median ÷ row median (above 1: strom faster); all servers and the "
        "client on this one machine"
    )
    lines += [f"- {note}" for note in results.notes]
    produce = report.render_table(results, PRODUCE, PRODUCE_COLUMNS)
    consume = report.render_table(results, CONSUME, CONSUME_COLUMNS)
    if produce:
        lines += ["", "Produce (acknowledged records):", "", *produce]
    if consume:
        lines += ["", "Consume (records handed to the application):", "", *consume]
    skipped = report.render_skipped(results)
    if skipped:
        lines += ["", *skipped]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records per measure")
    parser.add_argument("--runs", type=int, default=3, help="runs per measure (median)")
    parser.add_argument(
        "--only", default=",".join(SYSTEMS), help="comma list of " + ",".join(SYSTEMS)
    )
    parser.add_argument("--no-consume", action="store_true", help="produce measures only")
    parser.add_argument("--file-batch-records", type=int, default=1_000)
    parser.add_argument("--nats-window", type=int, default=4_000, help="publishes in flight")
    parser.add_argument("--redis-pipeline", type=int, default=1_000)
    parser.add_argument("--consume-batch", type=int, default=1_000, help="NATS fetch, XREAD COUNT")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems in --only: {', '.join(sorted(unknown))}")
    if args.records < 7_500:
        parser.error("--records must be at least 7,500 (three 2,500-record raw gRPC batches)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_signals()
    load = os.getloadavg()
    results = Results(RECORD_BYTES)
    root = Path(tempfile.mkdtemp(prefix="strom-peers-"))
    status = 0
    try:
        for system in (s for s in SYSTEMS if s in args.only.split(",")):
            run, why_not = RUNNERS[system]
            reason = why_not()
            if reason:
                results.skip(system, reason)
                print(f"skipped: {system}: {reason}", file=sys.stderr)
                continue
            try:
                run(Context(args, root, results))
            except Exception as e:  # one broken peer must not hide the others' numbers
                results.skip(system, f"failed: {type(e).__name__}: {e}")
                print(f"failed: {system}: {e!r}", file=sys.stderr)
    except (KeyboardInterrupt, SystemExit) as e:
        results.notes.append("interrupted: partial results")
        status = 130 if isinstance(e, KeyboardInterrupt) else int(e.code or 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(render(results, args, load))
    return status


if __name__ == "__main__":
    sys.exit(main())

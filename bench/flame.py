"""`make profile`: flame graphs of a broker and of the client under `strom perf produce`.

    .venv/bin/python bench/flame.py [--records 1000000] [--acks all] [--out bench/profile]
                                    [--format flamegraph|raw] [--native]

Starts a fresh local three-node cluster (as bench/peers.py does), creates a topic of three
partitions (RF=3, min.insync.replicas=2, or RF=1 with --acks 1) and runs `strom perf produce`
with the SDK's default producer settings under py-spy, while a second py-spy samples node 1,
which leads one partition and follows the other two. Writes `client.svg` and `node1.svg` (open
them in a browser: width is time on CPU, bottom to top is the call stack).

`--format raw` writes collapsed stacks instead (`client.txt`, `node1.txt`) and prints, for each,
the functions holding the most samples of their own: the summary bench/RESULTS.md quotes.
`--native` adds C frames (gRPC core, the codec), at a higher sampling cost.

py-spy (PyPI) reads the processes' memory, so it needs ptrace rights: root, or
`kernel.yama.ptrace_scope=0`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from peer_strom import local_cluster

from strom.client.admin import AsyncAdmin, NewTopic
from strom.node.local_cluster import LocalCluster

RATE_HZ = 100


def _py_spy() -> str:
    found = Path(sys.executable).with_name("py-spy")
    if found.exists():
        return str(found)
    path = shutil.which("py-spy")
    if path is None:
        sys.exit("py-spy is not installed: make profile installs it (pip install py-spy)")
    return path


def _record_args(out: Path, fmt: str, native: bool) -> list[str]:
    args = [_py_spy(), "record", "--rate", str(RATE_HZ), "--format", fmt, "-o", str(out)]
    return [*args, "--native"] if native else args


async def _create_topic(bootstrap: str, topic: str, replication: int) -> None:
    async with AsyncAdmin(bootstrap) as admin:
        configs = {"min.insync.replicas": "2"} if replication == 3 else {}
        await admin.create_topics([NewTopic(topic, 3, replication, configs)])


def top_self(collapsed: Path, count: int = 15) -> list[tuple[float, str]]:
    """(share of samples, frame) of the frames with the most samples of their own, from
    py-spy's raw format: one `frame;frame;...;leaf N` line per distinct stack."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        own[stack.rsplit(";", 1)[-1]] += int(samples)
        total += int(samples)
    return [(n / max(total, 1), frame) for frame, n in own.most_common(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--acks", choices=("all", "1"), default="all")
    parser.add_argument("--out", default="bench/profile", help="where the graphs go")
    parser.add_argument("--format", choices=("flamegraph", "raw"), default="flamegraph")
    parser.add_argument("--native", action="store_true", help="C frames too (slower sampling)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "svg" if args.format == "flamegraph" else "txt"
    client_out, node_out = out / f"client.{suffix}", out / f"node1.{suffix}"
    root = Path(tempfile.mkdtemp(prefix="strom-profile-"))
    cli = str(Path(sys.executable).with_name("strom"))
    try:
        with local_cluster(root) as bootstrap:
            topic = "profile"
            asyncio.run(_create_topic(bootstrap, topic, 3 if args.acks == "all" else 1))
            node_pid = LocalCluster(root).pid(1)
            assert node_pid is not None, "node 1 is not running"
            node_spy = subprocess.Popen(
                [*_record_args(node_out, args.format, args.native), "--pid", str(node_pid)],
                stdout=subprocess.DEVNULL,
            )
            produce = [
                cli, "perf", "produce", "--bootstrap-server", bootstrap, "--topic", topic,
                "--num-records", str(args.records), "--acks", args.acks,
            ]  # fmt: skip
            subprocess.run(
                [*_record_args(client_out, args.format, args.native), "--", *produce],
                check=True,
            )
            node_spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            node_spy.wait(timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for path in (client_out, node_out):
        print(f"wrote {path}")
        if args.format == "raw":
            for share, frame in top_self(path):
                print(f"  {share:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What one hostile request costs a node (issue #15): the longest event-loop stall it causes, or
the memory it takes, in one process over the node's real code (no cluster, no network).

    .venv/bin/python bench/hostile.py            # every case
    .venv/bin/python bench/hostile.py --case produce-entries

Cases: a produce of 600,000 one-record batches in one partition entry; a produce of 100,000
partition entries; CreateTopics of 1,000,000 partitions with validate_only (a single-voter
Raft quorum); a metadata change adding 2,000 replicas to a broker; 500 concurrent wrong
passwords and one correct login of another user (real scrypt); a 250 KB gzip batch that
inflates to 250 MiB (tracemalloc peak). Results go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "unit")]

from replica_fixtures import changed, image, manager  # noqa: E402
from test_controller_service import running_quorum  # noqa: E402
from test_request_bounds import ONE_BATCH, LoopProbe, broker, produce_request  # noqa: E402
from test_storage_gzip_bomb import NOW_MS, gzip_bomb  # noqa: E402

from strom.client.sasl import new_credential  # noqa: E402
from strom.node.metadata.image import PartitionInfo  # noqa: E402
from strom.node.security.credentials import CredentialVerifier  # noqa: E402
from strom.storage.errors import StorageError  # noqa: E402
from strom.storage.partition_log import PartitionLog  # noqa: E402
from strom.v1 import admin_pb2, controller_pb2  # noqa: E402


async def _probed(work: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    """(seconds, longest loop gap in seconds, result) of `work` on this loop."""
    started = time.perf_counter()
    async with LoopProbe() as probe:
        result = await work()
    return time.perf_counter() - started, probe.gap_s_max, result


async def produce_one_entry(tmp: Path) -> str:
    servicer = broker(tmp)
    took, gap, response = await _probed(
        lambda: servicer.Produce(produce_request([ONE_BATCH * 600_000]), None)  # type: ignore[arg-type]
    )
    code = response.topics[0].partitions[0].error_code
    return f"{took:.2f} s, longest loop gap {gap * 1000:.0f} ms, error code {code}"


async def produce_entries(tmp: Path) -> str:
    servicer = broker(tmp)
    took, gap, _ = await _probed(
        lambda: servicer.Produce(produce_request([ONE_BATCH] * 100_000), None)  # type: ignore[arg-type]
    )
    return f"{took:.2f} s, longest loop gap {gap * 1000:.0f} ms"


async def create_topics(tmp: Path) -> str:
    async with running_quorum() as q:
        registered = await q.register(1)
        beat = controller_pb2.BrokerHeartbeatRequest(
            broker_id=1, broker_epoch=registered.broker_epoch
        )
        for _ in range(200):
            beat.current_metadata_offset = q.metadata.image.last_index
            answer = await q.service.BrokerHeartbeat(beat, None)  # type: ignore[arg-type]
            if not answer.is_fenced:
                break
            await asyncio.sleep(0.01)
        request = admin_pb2.CreateTopicsRequest(
            topics=[admin_pb2.CreatableTopic(name="huge", num_partitions=1_000_000,
                                             replication_factor=1)],
            validate_only=True,
        )  # fmt: skip
        took, gap, response = await _probed(
            lambda: q.service.CreateTopics(request, None)  # type: ignore[arg-type]
        )
        code = response.topics[0].error_code
        return f"{took:.2f} s, longest loop gap {gap * 1000:.0f} ms, error code {code}"


async def new_replicas(tmp: Path) -> str:
    replicas = manager(tmp)
    count = 2_000
    img = image({i: PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=0,
                                  partition_epoch=0) for i in range(count)})  # fmt: skip

    async def apply() -> None:
        replicas.on_metadata(img, changed(img))
        while len(replicas.partitions) < count:
            await asyncio.sleep(0.01)

    took, gap, _ = await _probed(apply)
    await replicas.stop()
    return f"{count} logs in {took:.2f} s, longest loop gap {gap * 1000:.0f} ms"


async def login_flood(tmp: Path) -> str:
    users = {"alice": new_credential("alice-pw"), "bob": new_credential("bob-pw")}
    verifier = CredentialVerifier(lambda: users)

    async def attempt(user: str, password: str, peer: str) -> float:
        started = time.perf_counter()
        with contextlib.suppress(Exception):  # refused at once: too many in flight
            try:
                await verifier.verify(user, password, peer)
            except TypeError:  # before #15 verify took no peer
                await verifier.verify(user, password)
        return time.perf_counter() - started

    started = time.perf_counter()
    flood = [
        asyncio.create_task(attempt("alice", f"guess-{i}", f"ipv4:10.0.{i // 250}.{i % 250}:1"))
        for i in range(500)
    ]
    await asyncio.sleep(0)
    bob = await attempt("bob", "bob-pw", "ipv4:10.9.9.9:1")
    await asyncio.gather(*flood)
    drained = time.perf_counter() - started
    unknown = await attempt("nobody", "x", "ipv4:10.8.0.1:1")
    wrong = await attempt("alice", "x", "ipv4:10.8.0.2:1")
    return (
        f"bob's login {bob * 1000:.0f} ms, flood drained in {drained:.1f} s, "
        f"{verifier.derivations} scrypt derivations; unknown user {unknown * 1000:.0f} ms, "
        f"wrong password {wrong * 1000:.0f} ms"
    )


async def gzip_bomb_case(tmp: Path) -> str:
    bomb = gzip_bomb(250 << 20)
    log = PartitionLog.open(str(tmp / "t-0"), now_ms=NOW_MS)
    tracemalloc.start()
    try:
        log.append(bomb, 0, now_ms=NOW_MS)
        outcome = "accepted"
    except StorageError as exc:
        outcome = f"refused ({getattr(exc, 'error_name', exc)})"
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    log.close()
    return f"{len(bomb) // 1024} KiB batch {outcome}, peak {peak / 2**20:.1f} MiB"


CASES = {
    "produce-one-entry": produce_one_entry,
    "produce-entries": produce_entries,
    "create-topics": create_topics,
    "new-replicas": new_replicas,
    "login-flood": login_flood,
    "gzip-bomb": gzip_bomb_case,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    args = parser.parse_args()
    for name in args.case or list(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{name}: {asyncio.run(CASES[name](Path(tmp)))}", flush=True)


if __name__ == "__main__":
    main()

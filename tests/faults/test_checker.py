"""The history recorder and checker: hand-made histories with each anomaly, and a property.

The property: histories generated from a correct in-memory log (partitioned, with producers,
group consumers that poll, seek and rebalance revoke-first, indeterminate and failed sends, and
a final drain) never report an anomaly, and one injected mutation (every read of an
acknowledged value dropped, a value duplicated, two offsets swapped) is always reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from .checker import ANOMALY_KINDS, Report, check
from .history import HistoryError, Op, Recorder, load

pytestmark = pytest.mark.faults


def _recorder() -> Recorder:
    ticks = itertools.count(0, 10)
    return Recorder(clock=lambda: next(ticks))


def send(
    rec: Recorder, process: int, value: Any, partition: int, offset: int | None, end: str = "ok"
) -> None:
    pending = rec.invoke(process, "send", {"key": f"k{value}", "value": value, "partition": None})
    if end == "ok":
        assert offset is not None
        pending.ok({"partition": partition, "offset": offset})
    elif end == "info":
        pending.info("timed out")
    elif end == "fail":
        pending.fail("rejected")


def poll(rec: Recorder, process: int, records: Sequence[tuple[int, int, Any]]) -> None:
    rec.invoke(process, "poll", {}).ok({"records": [list(r) for r in records]})


def assign(
    rec: Recorder, process: int, partitions: Sequence[int], generation: int | None = None
) -> None:
    value: dict[str, Any] = {"group": "g", "member": f"m{process}", "epoch": 1}
    if generation is not None:
        value["generation"] = generation
    rec.invoke(process, "assign", {"group": "g"}).ok({**value, "partitions": list(partitions)})


def seek(rec: Recorder, process: int, partition: int, offset: int) -> None:
    rec.invoke(process, "seek", {"partition": partition, "offset": offset}).ok()


def only(report: Report, *kinds: str) -> None:
    """The report holds anomalies of exactly `kinds`."""
    found = {kind for kind in ANOMALY_KINDS if report.count(kind)}
    assert found == set(kinds), str(report)
    assert report.ok == (not kinds)


def _three_acked(rec: Recorder) -> None:
    for offset, value in enumerate("abc"):
        send(rec, 1, value, 0, offset)


def test_a_clean_history_reports_nothing() -> None:
    rec = _recorder()
    _three_acked(rec)
    send(rec, 1, "d", 0, None, end="fail")
    poll(rec, 10, [(0, 0, "a"), (0, 1, "b")])
    poll(rec, 10, [(0, 2, "c")])
    poll(rec, 11, [(0, 1, "b"), (0, 2, "c")])
    rec.fault("isolate", {"host": "n1"})
    report = check(rec.ops)
    only(report)
    assert (report.acknowledged, report.failed, report.indeterminate) == (3, 1, 0)
    assert (report.polls, report.records_read, report.faults) == (3, 5, {"isolate": 1})
    text = str(report)
    assert "3 acknowledged" in text and "faults injected: 1" in text and "result: ok" in text


def test_lost_write() -> None:
    rec = _recorder()
    _three_acked(rec)
    poll(rec, 10, [(0, 0, "a")])
    poll(rec, 11, [(0, 2, "c")])  # a fresh consumer that started at 2: no skip of its own
    report = check(rec.ops)
    only(report, "lost-write")
    assert report.anomalies["lost-write"][0].detail["value"] == "b"
    assert "lost-write: 1" in str(report) and "ANOMALIES FOUND" in str(report)


def test_unseen() -> None:
    rec = _recorder()
    _three_acked(rec)
    poll(rec, 10, [(0, 0, "a"), (0, 1, "b")])
    report = check(rec.ops)
    only(report, "unseen")
    assert report.anomalies["unseen"][0].detail["value"] == "c"


def test_duplicate() -> None:
    rec = _recorder()
    send(rec, 1, "a", 0, 0)
    poll(rec, 10, [(0, 0, "a"), (0, 1, "a")])
    report = check(rec.ops)
    only(report, "duplicate")
    assert report.anomalies["duplicate"][0].detail["at"] == [(0, 0), (0, 1)]


def test_inconsistent_offset() -> None:
    rec = _recorder()
    send(rec, 1, "a", 0, 0)
    send(rec, 2, "b", 0, None, end="info")
    poll(rec, 10, [(0, 0, "a")])
    poll(rec, 11, [(0, 0, "b")])
    report = check(rec.ops)
    only(report, "inconsistent-offset")
    assert report.anomalies["inconsistent-offset"][0].detail["values"] == ["a", "b"]


def test_poll_nonmonotonic_unless_a_seek_or_assign_came_between() -> None:
    rec = _recorder()
    _three_acked(rec)
    poll(rec, 10, [(0, 0, "a"), (0, 1, "b")])
    poll(rec, 10, [(0, 1, "b"), (0, 2, "c")])  # re-read 1: nonmonotonic
    seek(rec, 10, 0, 0)
    poll(rec, 10, [(0, 0, "a")])  # after a seek: fine
    assign(rec, 10, [0])
    poll(rec, 10, [(0, 0, "a")])  # after an assign: fine
    report = check(rec.ops)
    only(report, "poll-nonmonotonic")
    assert len(report.anomalies["poll-nonmonotonic"]) == 1
    assert report.anomalies["poll-nonmonotonic"][0].detail["read"] == 1


def test_poll_skip_counts_only_offsets_someone_saw() -> None:
    rec = _recorder()
    _three_acked(rec)
    send(rec, 1, "x", 1, 0)
    send(rec, 1, "y", 1, 7)  # offsets 1..6 of partition 1 were never observed (a gap is fine)
    poll(rec, 10, [(0, 0, "a"), (1, 0, "x")])
    poll(rec, 10, [(0, 2, "c"), (1, 7, "y")])  # skips offset 1 of partition 0
    poll(rec, 11, [(0, 1, "b")])
    report = check(rec.ops)
    only(report, "poll-skip")
    assert [a.detail["skipped"] for a in report.anomalies["poll-skip"]] == [[1]]


def test_group_exclusivity() -> None:
    rec = _recorder()
    assign(rec, 10, [0, 1])
    assign(rec, 11, [1])  # takes partition 1 while member 10 still owns it ...
    poll(rec, 10, [])  # ... and 10 is still working on its old assignment
    report = check(rec.ops)
    only(report, "group-exclusivity")
    assert report.anomalies["group-exclusivity"][0].detail["partition"] == 1


def test_a_revoke_first_handover_is_not_a_violation() -> None:
    rec = _recorder()
    assign(rec, 10, [0, 1])
    poll(rec, 10, [])
    assign(rec, 10, [0])  # 10 gives up partition 1 first
    assign(rec, 11, [1])
    poll(rec, 10, [])
    poll(rec, 11, [])
    only(check(rec.ops))


def test_one_generation_never_has_two_owners() -> None:
    rec = _recorder()
    assign(rec, 10, [0], generation=3)
    assign(rec, 10, [], generation=4)
    assign(rec, 11, [0], generation=3)  # after 10 let go in time, but claims generation 3
    report = check(rec.ops)
    only(report, "group-exclusivity")
    assert report.anomalies["group-exclusivity"][0].detail["generation"] == 3


def test_indeterminate_sends_are_never_anomalies() -> None:
    rec = _recorder()
    send(rec, 1, "a", 0, 0)
    send(rec, 2, "maybe", 0, None, end="info")
    send(rec, 3, "lost-maybe", 0, None, end="info")
    rec.invoke(4, "send", {"key": "k", "value": "never-answered", "partition": None})
    send(rec, 5, "b", 0, 2)
    poll(rec, 10, [(0, 0, "a"), (0, 1, "maybe"), (0, 2, "b")])
    report = check(rec.ops)
    only(report)
    assert (report.acknowledged, report.indeterminate) == (2, 3)


def test_malformed_histories_are_errors_not_anomalies() -> None:
    rec = _recorder()
    send(rec, 1, "a", 0, 0)
    send(rec, 2, "a", 0, 1)
    with pytest.raises(HistoryError, match="sent twice"):
        check(rec.ops)
    stray = Op(0, 0, 1, "ok", "poll", {"records": []})
    with pytest.raises(HistoryError, match="without its invoke"):
        check([stray])
    with pytest.raises(AssertionError, match="in flight"):
        rec.invoke(7, "poll", {})
        rec.invoke(7, "poll", {})


def test_recorder_threads_files_and_merge(tmp_path: Path) -> None:
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    threads_per_file, ops_per_thread = 4, 150
    recorders = [Recorder(path) for path in paths]

    def worker(rec: Recorder, process: int) -> None:
        for i in range(ops_per_thread):
            pending = rec.invoke(process, "send", {"value": f"{process}-{i}", "partition": 0})
            if i % 3:
                pending.ok({"offset": i})
            else:
                pending.info("timeout")

    threads = [
        threading.Thread(target=worker, args=(rec, n * 100 + t))
        for n, rec in enumerate(recorders)
        for t in range(threads_per_file)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for rec in recorders:
        rec.close()
    with paths[1].open("a") as torn:  # a writer killed in the middle of a line
        torn.write('{"index": 9999, "time_ns": 1')
    ops = load(paths)
    assert len(ops) == 2 * threads_per_file * ops_per_thread * 2
    assert [op.index for op in ops] == list(range(len(ops)))
    assert all(a.time_ns <= b.time_ns for a, b in itertools.pairwise(ops))
    for process in {op.process for op in ops}:
        kinds = [op.type for op in ops if op.process == process]
        assert kinds[::2] == ["invoke"] * ops_per_thread
        assert "invoke" not in kinds[1::2]
    report = check(ops)
    assert report.indeterminate == 2 * threads_per_file * 50
    assert report.acknowledged == 2 * threads_per_file * 100


def test_recorder_from_asyncio_tasks() -> None:
    """Each task is a process; a shared in-memory log hands out offsets as the tasks run."""
    rec = Recorder()
    log: list[str] = []

    async def producer(process: int) -> None:
        for i in range(50):
            value = f"{process}-{i}"
            pending = rec.invoke(process, "send", {"key": None, "value": value, "partition": 0})
            await asyncio.sleep(0)  # other tasks record while this send is in flight
            log.append(value)
            pending.ok({"offset": len(log) - 1})

    async def main() -> None:
        await asyncio.gather(*(producer(p) for p in range(8)))

    asyncio.run(main())
    poll(rec, 99, [(0, offset, value) for offset, value in enumerate(log)])
    report = check(rec.ops)
    assert report.ok, str(report)
    assert report.acknowledged == 400 and report.records_read == 400
    assert len({op.time_ns for op in rec.ops}) > 1


# --- the property ---


def _correct_history(data: st.DataObject) -> tuple[list[Op], list[list[int]]]:
    """A history of a correct partitioned log, drawn step by step (see module docstring)."""
    rec = _recorder()
    partitions = data.draw(st.integers(1, 3), label="partitions")
    logs: list[list[int]] = [[] for _ in range(partitions)]
    consumers = (10, 11)
    owned: dict[int, set[int]] = {10: set(range(partitions)), 11: set()}
    position: dict[int, dict[int, int]] = {10: dict.fromkeys(range(partitions), 0), 11: {}}
    for consumer in consumers:
        assign(rec, consumer, sorted(owned[consumer]))
    steps = data.draw(
        st.lists(
            st.sampled_from(["send"] * 3 + ["poll"] * 3 + ["seek", "rebalance"]),
            min_size=4,
            max_size=40,
        )
    )
    for number, step in enumerate(steps):
        if step == "send":
            partition = data.draw(st.integers(0, partitions - 1))
            end = data.draw(st.sampled_from(["ok", "ok", "ok", "applied", "info", "fail"]))
            if end in ("ok", "applied"):
                logs[partition].append(number)
            offset = len(logs[partition]) - 1
            send(rec, number % 2, number, partition, offset, "info" if end == "applied" else end)
        elif step == "poll":
            consumer = data.draw(st.sampled_from(consumers))
            records: list[tuple[int, int, Any]] = []
            for partition in data.draw(st.permutations(sorted(owned[consumer]))):
                start = position[consumer][partition]
                chunk = logs[partition][start : start + data.draw(st.integers(1, 5))]
                records += [(partition, start + i, v) for i, v in enumerate(chunk)]
                position[consumer][partition] = start + len(chunk)
            poll(rec, consumer, records)
        elif step == "seek":
            consumer = data.draw(st.sampled_from(consumers))
            if owned[consumer]:
                partition = data.draw(st.sampled_from(sorted(owned[consumer])))
                offset = data.draw(st.integers(0, len(logs[partition])))
                position[consumer][partition] = offset
                seek(rec, consumer, partition, offset)
        else:
            target = {p: data.draw(st.sampled_from(consumers)) for p in range(partitions)}
            new = {c: {p for p, owner in target.items() if owner == c} for c in consumers}
            for c in consumers:  # revoke first ...
                if owned[c] - new[c]:
                    owned[c] &= new[c]
                    assign(rec, c, sorted(owned[c]))
            for c in consumers:  # ... then hand out, starting at any committed offset
                if new[c] - owned[c]:
                    for p in new[c] - owned[c]:
                        position[c][p] = data.draw(st.integers(0, len(logs[p])))
                    owned[c] = new[c]
                    assign(rec, c, sorted(owned[c]))
    drain = 99  # a final reader outside the group reads every partition from the start
    for partition in range(partitions):
        seek(rec, drain, partition, 0)
    poll(rec, drain, [(p, o, v) for p, log in enumerate(logs) for o, v in enumerate(log)])
    return rec.ops, logs


def _replace_records(op: Op, records: list[list[Any]]) -> Op:
    return dataclasses.replace(op, value={**op.value, "records": records})


def _mutate(ops: list[Op], logs: list[list[int]], kind: str, data: st.DataObject) -> list[Op]:
    polls = [i for i, op in enumerate(ops) if op.f == "poll" and op.type == "ok"]
    if kind == "drop every read of an acknowledged value":
        acked = [op.value["value"] for op in ops if op.f == "send" and op.type == "ok"]
        assume(acked)
        value = data.draw(st.sampled_from(acked))
        return [
            _replace_records(op, [r for r in op.value["records"] if r[2] != value])
            if i in polls
            else op
            for i, op in enumerate(ops)
        ]
    if kind == "duplicate a value":
        read = [r for i in polls for r in ops[i].value["records"]]
        assume(read)
        partition, _, value = data.draw(st.sampled_from(read))
        last = polls[-1]  # the drain: its copy lands at a fresh offset past the end
        extra = [partition, len(logs[partition]), value]
        return [*ops[:last], _replace_records(ops[last], [*ops[last].value["records"], extra])]
    # swap the offsets of two records of one partition within one poll
    pairs = [
        (i, a, b)
        for i in polls
        for a, b in itertools.combinations(range(len(ops[i].value["records"])), 2)
        if ops[i].value["records"][a][0] == ops[i].value["records"][b][0]
    ]
    assume(pairs)
    i, a, b = data.draw(st.sampled_from(pairs))
    records = [list(r) for r in ops[i].value["records"]]
    records[a][1], records[b][1] = records[b][1], records[a][1]
    return [*ops[:i], _replace_records(ops[i], records), *ops[i + 1 :]]


MUTATIONS = ("drop every read of an acknowledged value", "duplicate a value", "swap offsets")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data(), kind=st.sampled_from(MUTATIONS))
def test_correct_logs_pass_and_any_single_mutation_is_caught(
    data: st.DataObject, kind: str
) -> None:
    ops, logs = _correct_history(data)
    report = check(ops)
    assert report.ok, str(report)
    mutated = check(_mutate(ops, logs, kind, data))
    assert not mutated.ok, f"{kind} went unnoticed:\n{mutated}"

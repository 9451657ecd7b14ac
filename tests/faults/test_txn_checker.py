"""The transactional checker on hand-made histories: a clean one reports nothing, and each
anomaly (an aborted read, a half-visible transaction, a lost commit, records out of order, a
duplicate, a phantom) is reported as itself."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from .history import HistoryError, Recorder
from .txn_checker import TXN_ANOMALY_KINDS, TxnReport, check_transactions

pytestmark = pytest.mark.faults


def _recorder() -> Recorder:
    ticks = itertools.count(0, 10)
    return Recorder(clock=lambda: next(ticks))


def txn(
    rec: Recorder, txn_id: str, writes: Sequence[tuple[int, str]], outcome: str, end: str = "ok"
) -> None:
    value: dict[str, Any] = {"txn": txn_id, "writes": [list(w) for w in writes],
                             "outcome": outcome}  # fmt: skip
    pending = rec.invoke("t0", "txn", value)
    if end == "ok":
        pending.ok()
    elif end == "fail":
        pending.fail("INVALID_TXN_STATE")
    else:
        pending.info("timed out")


def poll(rec: Recorder, records: Sequence[tuple[int, int, str]]) -> None:
    rec.invoke("reader", "poll", {}).ok({"records": [list(r) for r in records]})


def only(report: TxnReport, *kinds: str) -> None:
    found = {kind for kind in TXN_ANOMALY_KINDS if report.count(kind)}
    assert found == set(kinds), str(report)
    assert report.ok == (not kinds)


def _committed_and_aborted(rec: Recorder) -> None:
    txn(rec, "a", [(0, "a0"), (1, "a1"), (0, "a2")], "commit")
    txn(rec, "b", [(0, "b0"), (1, "b1")], "abort")
    txn(rec, "c", [(0, "c0"), (1, "c1")], "commit", end="fail")  # aborted after an error
    txn(rec, "d", [(0, "d0"), (1, "d1")], "commit", end="info")


def test_a_clean_history_reports_nothing() -> None:
    rec = _recorder()
    _committed_and_aborted(rec)
    poll(rec, [(0, 0, "a0"), (1, 0, "a1")])
    poll(rec, [(0, 1, "a2"), (0, 8, "d0"), (1, 6, "d1")])  # the unknown one, in full
    rec.fault("kill", {"host": "n1"})
    report = check_transactions(rec.ops)
    only(report)
    assert (report.committed, report.aborted, report.indeterminate) == (1, 2, 1)
    assert report.records_read == 5 and report.faults == {"kill": 1}
    assert "result: ok" in str(report)


@pytest.mark.parametrize(
    ("aborted", "read"),
    [
        ("b", [(0, 5, "b0"), (1, 5, "b1")]),  # an acknowledged abort
        ("c", [(0, 7, "c0"), (1, 7, "c1")]),  # a commit refused, then aborted
    ],
)
def test_an_aborted_read_is_reported(aborted: str, read: list[tuple[int, int, str]]) -> None:
    rec = _recorder()
    _committed_and_aborted(rec)
    poll(rec, [(0, 0, "a0"), (1, 0, "a1"), (0, 1, "a2")])
    poll(rec, read)
    report = check_transactions(rec.ops)
    only(report, "aborted-read")
    assert report.anomalies["aborted-read"][0].detail["txn"] == aborted
    assert "ANOMALIES FOUND" in str(report)


def test_a_half_visible_transaction_is_reported() -> None:
    rec = _recorder()
    _committed_and_aborted(rec)
    poll(rec, [(0, 0, "a0"), (0, 1, "a2")])  # a1 of the committed transaction never shows
    report = check_transactions(rec.ops)
    only(report, "partial-read")
    assert report.anomalies["partial-read"][0].detail["missing"] == ["a1"]


def test_a_half_visible_unknown_transaction_is_reported() -> None:
    rec = _recorder()
    _committed_and_aborted(rec)
    poll(rec, [(0, 0, "a0"), (1, 0, "a1"), (0, 1, "a2"), (0, 8, "d0")])
    report = check_transactions(rec.ops)
    only(report, "partial-read")
    assert report.anomalies["partial-read"][0].detail["txn"] == "d"


def test_a_lost_commit_is_reported() -> None:
    rec = _recorder()
    _committed_and_aborted(rec)
    poll(rec, [])
    report = check_transactions(rec.ops)
    only(report, "lost-commit")
    assert report.anomalies["lost-commit"][0].detail["values"] == ["a0", "a1", "a2"]


def test_records_out_of_order_are_reported() -> None:
    rec = _recorder()
    _committed_and_aborted(rec)
    poll(rec, [(0, 1, "a0"), (1, 0, "a1"), (0, 0, "a2")])
    report = check_transactions(rec.ops)
    only(report, "txn-order")
    assert report.anomalies["txn-order"][0].detail["value"] == "a2"


def test_duplicates_and_phantoms_are_reported() -> None:
    rec = _recorder()
    _committed_and_aborted(rec)
    poll(rec, [(0, 0, "a0"), (1, 0, "a1"), (0, 1, "a2"), (0, 2, "a2"), (0, 3, "zz")])
    report = check_transactions(rec.ops)
    only(report, "duplicate", "phantom")


def test_a_value_sent_twice_is_a_bad_history() -> None:
    rec = _recorder()
    txn(rec, "a", [(0, "x")], "commit")
    txn(rec, "b", [(1, "x")], "commit")
    with pytest.raises(HistoryError, match="sent twice"):
        check_transactions(rec.ops)


def lso(rec: Recorder, offsets: Sequence[tuple[int, int]], process: str = "reader") -> None:
    rec.invoke(process, "lso", {}).ok({"offsets": [list(o) for o in offsets]})


def test_a_last_stable_offset_going_backwards_is_reported() -> None:
    rec = _recorder()
    txn(rec, "a", [(0, "a0"), (1, "a1")], "commit")
    lso(rec, [(0, 0), (1, 0)])
    poll(rec, [(0, 0, "a0"), (1, 0, "a1")])
    lso(rec, [(0, 2), (1, 2)])
    rec.invoke("final", "lso", {}).ok({"offsets": [[0, 1]]})  # another reader: its own view
    only(check_transactions(rec.ops))
    lso(rec, [(0, 1), (1, 2)])  # partition 0 went back from 2
    report = check_transactions(rec.ops)
    only(report, "lso-regression")
    (found,) = report.anomalies["lso-regression"]
    assert found.detail == {"process": "reader", "partition": 0, "lso": 1, "before": 2}


def test_a_last_stable_offset_below_a_record_already_read_is_reported() -> None:
    rec = _recorder()
    txn(rec, "a", [(0, "a0"), (0, "a1")], "commit")
    poll(rec, [(0, 4, "a0"), (0, 5, "a1")])  # read at 5: the LSO was past 5
    rec.invoke("reader", "lso", {}).info("timed out")  # unknown answers prove nothing
    lso(rec, [(0, 5)])
    only(check_transactions(rec.ops), "lso-regression")

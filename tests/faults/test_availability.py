"""Availability from hand-made histories: the longest stretch without an acknowledged write in
the faulty period, and the time from the final heal to the first write and to every partition's."""

from __future__ import annotations

import pytest

from .availability import measure
from .history import Op, Recorder

pytestmark = pytest.mark.faults

S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def ack(rec: Recorder, clock: Clock, at_s: float, partition: int, value: str) -> None:
    clock.now = int(at_s * S) - 1
    pending = rec.invoke("w0", "send", {"key": None, "value": value, "partition": None})
    clock.now = int(at_s * S)
    pending.ok({"partition": partition, "offset": 0})


def fault(rec: Recorder, clock: Clock, at_s: float, f: str, **value: object) -> None:
    clock.now = int(at_s * S)
    rec.fault(f, value)


def history(events: list[tuple[float, str, dict[str, object]]]) -> list[Op]:
    clock = Clock()
    rec = Recorder(clock=clock)
    for n, (at_s, what, value) in enumerate(sorted(events, key=lambda e: e[0])):
        if what == "ack":
            ack(rec, clock, at_s, int(str(value["partition"])), f"v{n}")
        else:
            fault(rec, clock, at_s, what, **value)
    return rec.ops


def test_the_longest_outage_is_measured_inside_the_faulty_period_only() -> None:
    ops = history(
        [
            (0.0, "ack", {"partition": 0}),  # 10 s quiet before the first fault: not counted
            (10.0, "fault-start", {"step": 1, "kind": "pause-controller"}),
            (11.0, "ack", {"partition": 0}),
            (18.0, "fault-stop", {"step": 1, "kind": "pause-controller"}),
            (19.5, "ack", {"partition": 1}),  # 8.5 s after the last ack: inter-fault recovery
            (20.0, "fault-start", {"step": 2, "kind": "kill"}),
            (21.0, "ack", {"partition": 0}),
            (24.0, "fault-stop", {"step": 2, "kind": "kill"}),
            (25.0, "final-heal", {}),
            (40.0, "ack", {"partition": 0}),  # quiet after the heal: not an outage here
            (42.0, "ack", {"partition": 1}),
        ]
    )
    a = measure(ops)
    assert a.faulty_s == pytest.approx(15.0)
    assert a.longest_outage_s == pytest.approx(8.5)
    assert a.outage_during == ("pause-controller",)
    assert a.first_write_after_heal_s == pytest.approx(15.0)
    assert a.full_recovery_after_heal_s == pytest.approx(17.0)
    assert a.partitions == 2 and a.acked_during_faults == 2
    assert "8.5 s (during: pause-controller)" in str(a)


def test_an_outage_running_into_the_final_heal_is_cut_there() -> None:
    ops = history(
        [
            (0.0, "ack", {"partition": 0}),
            (1.0, "fault-start", {"step": 1, "kind": "double"}),
            (2.0, "ack", {"partition": 0}),
            (4.0, "fault-stop", {"step": 1, "kind": "double"}),
            (5.0, "fault-start", {"step": 2, "kind": "kill-cycle"}),
            (9.0, "fault-stop", {"step": 2, "kind": "kill-cycle"}),
            (14.0, "final-heal", {}),
            (15.0, "ack", {"partition": 0}),
        ]
    )
    a = measure(ops)
    assert a.longest_outage_s == pytest.approx(12.0)  # from 2 s to the heal at 14 s
    assert a.outage_during == ("double", "kill-cycle")
    assert a.first_write_after_heal_s == a.full_recovery_after_heal_s == pytest.approx(1.0)


def test_a_partition_that_never_takes_a_write_after_the_heal_means_no_full_recovery() -> None:
    ops = history(
        [
            (0.0, "ack", {"partition": 0}),
            (0.5, "ack", {"partition": 2}),
            (1.0, "fault-start", {"step": 1, "kind": "isolate"}),
            (4.0, "fault-stop", {"step": 1, "kind": "isolate"}),
            (5.0, "final-heal", {}),
            (6.0, "ack", {"partition": 0}),
        ]
    )
    a = measure(ops)
    assert a.first_write_after_heal_s == pytest.approx(1.0)
    assert a.full_recovery_after_heal_s is None
    assert "writable again in never" in str(a)
    silent = history(
        [
            (0.0, "ack", {"partition": 0}),
            (1.0, "fault-start", {"step": 1, "kind": "isolate"}),
            (5.0, "final-heal", {}),  # a step never stopped ends at the last record
        ]
    )
    a = measure(silent)
    assert a.first_write_after_heal_s is None and a.longest_outage_s == pytest.approx(4.0)
    assert a.outage_during == ("isolate",)


def test_a_history_without_faults_has_no_availability_to_measure() -> None:
    with pytest.raises(ValueError, match="no fault step"):
        measure(history([(0.0, "ack", {"partition": 0}), (1.0, "final-heal", {})]))

"""A Jepsen-style history of client operations, recorded as JSON lines.

Each line is one record:

    {"index": 7, "time_ns": 81234, "process": 3, "type": "ok", "f": "send",
     "value": {"key": "k1", "value": 17, "partition": 0, "offset": 5}}

- `type` is `invoke` when a process starts an operation, then exactly one completion by the
  same process: `ok` (it happened), `fail` (it certainly did not happen) or `info` (unknown:
  a timeout or a crash; it may or may not have happened). An invoke with no completion by the
  end of the history counts as `info`. A process has at most one operation in flight; a client
  that crashes and comes back uses a new process id.
- `time_ns` is CLOCK_MONOTONIC, which every process on one machine shares (network namespaces
  do not change it), so histories that several client processes wrote merge by time (`load`).
- `process` is an int or a string. Faults are records of the process "nemesis", type `info`,
  `f` the fault's name and `value` its details (`Recorder.fault`, which fits `Lab(on_fault=)`).

The values the checker (checker.py) reads, by `f`; a completion's value is the invoke's value
updated with what the completion adds:

    send    invoke {"key": k, "value": v, "partition": p or null}
            ok     adds {"partition": p, "offset": o}        values must be unique per send
    poll    invoke {}
            ok     {"records": [[p, o, v], ...]} in the order the consumer received them
    assign  ok     {"group": g, "member": m, "epoch": e, "partitions": [p, ...]}
                   optional "generation": n (classic protocol: one number for the whole group)
    seek    ok     {"partition": p, "offset": o} (the next poll of p may start anywhere)

`Recorder` is safe to use from many threads and from asyncio tasks (it holds a lock only to
number, stamp and write one record). With a path, every record is written and flushed as one
line, so a client killed mid-run leaves a readable history (`load` skips a torn last line).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

OpType = Literal["invoke", "ok", "fail", "info"]
Process = int | str
NEMESIS = "nemesis"
_TYPES = ("invoke", "ok", "fail", "info")


class HistoryError(ValueError):
    """A history that breaks the record rules above (not an anomaly of the system under test)."""


@dataclass(frozen=True, slots=True)
class Op:
    """One record of a history."""

    index: int
    time_ns: int
    process: Process
    type: OpType
    f: str
    value: Any = None
    error: str | None = None

    def to_json(self) -> str:
        record: dict[str, Any] = {
            "index": self.index,
            "time_ns": self.time_ns,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "value": self.value,
        }
        if self.error is not None:
            record["error"] = self.error
        return json.dumps(record, separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> Op:
        raw = json.loads(line)
        if raw.get("type") not in _TYPES:
            raise HistoryError(f"record type must be one of {_TYPES}: {line!r}")
        return Op(
            index=int(raw["index"]),
            time_ns=int(raw["time_ns"]),
            process=raw["process"],
            type=raw["type"],
            f=str(raw["f"]),
            value=raw.get("value"),
            error=raw.get("error"),
        )


class Pending:
    """An invoked operation; complete it exactly once with ok, fail or info."""

    __slots__ = ("_done", "_recorder", "f", "process", "value")

    def __init__(self, recorder: Recorder, process: Process, f: str, value: Any) -> None:
        self._recorder = recorder
        self._done = False
        self.process = process
        self.f = f
        self.value = value

    def ok(self, value: Any = None) -> Op:
        """It happened. A dict `value` is merged over the invoke's value (e.g. the offset)."""
        return self._complete("ok", value, None)

    def fail(self, error: str) -> Op:
        """It certainly did not happen."""
        return self._complete("fail", None, error)

    def info(self, error: str) -> Op:
        """Unknown outcome (timeout, connection lost): it may or may not have happened."""
        return self._complete("info", None, error)

    def _complete(self, kind: OpType, value: Any, error: str | None) -> Op:
        assert not self._done, f"operation {self.f} of process {self.process} completed twice"
        self._done = True
        if isinstance(self.value, dict) and (value is None or isinstance(value, dict)):
            merged: Any = {**self.value, **(value or {})}
        else:
            merged = self.value if value is None else value
        return self._recorder._record(self.process, kind, self.f, merged, error, finishing=self)


class Recorder:
    """Records a history in memory and, given a path, as JSON lines. Thread-safe."""

    def __init__(
        self, path: Path | None = None, *, clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._in_flight: dict[Process, Pending] = {}
        self._file: IO[str] | None = path.open("a", encoding="utf-8") if path else None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def invoke(self, process: Process, f: str, value: Any = None) -> Pending:
        """Start operation `f` on `process` (which must have none in flight)."""
        assert process != NEMESIS, "the nemesis records faults with fault()"
        pending = Pending(self, process, f, value)
        self._record(process, "invoke", f, value, None, starting=pending)
        return pending

    def fault(self, name: str, details: dict[str, Any] | None = None) -> Op:
        """Record a fault the nemesis injected (signature fits `Lab(on_fault=...)`)."""
        return self._record(NEMESIS, "info", name, details or {}, None)

    @property
    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def _record(
        self,
        process: Process,
        kind: OpType,
        f: str,
        value: Any,
        error: str | None,
        *,
        starting: Pending | None = None,
        finishing: Pending | None = None,
    ) -> Op:
        with self._lock:
            if starting is not None:
                busy = self._in_flight.get(process)
                assert busy is None, f"process {process} already has {busy.f} in flight"
                self._in_flight[process] = starting
            if finishing is not None:
                assert self._in_flight.get(process) is finishing
                del self._in_flight[process]
            # Stamped under the lock, so index order is time order.
            op = Op(len(self._ops), self._clock(), process, kind, f, value, error)
            self._ops.append(op)
            if self._file is not None:
                self._file.write(op.to_json() + "\n")
                self._file.flush()
            return op


def dump(ops: Iterable[Op], path: Path) -> None:
    path.write_text("".join(op.to_json() + "\n" for op in ops), encoding="utf-8")


def _read(path: Path) -> Iterator[Op]:
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield Op.from_json(line)
        except (json.JSONDecodeError, KeyError) as exc:
            if number == len(lines):  # a writer killed mid-line: its last record is torn
                return
            raise HistoryError(f"{path}:{number}: {exc}") from exc


def load(paths: Iterable[Path]) -> list[Op]:
    """Merge the histories in `paths` into one, ordered by time, and renumber it."""
    merged: list[tuple[int, int, int, Op]] = []
    for file_number, path in enumerate(paths):
        merged.extend((op.time_ns, file_number, op.index, op) for op in _read(path))
    merged.sort(key=lambda item: item[:3])
    return [
        Op(i, op.time_ns, op.process, op.type, op.f, op.value, op.error)
        for i, (*_, op) in enumerate(merged)
    ]

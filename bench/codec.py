"""The record codec's per-record loops, compiled against their pure-Python reference, in one
process: the producer's encoder, the leader's framing walk, the consumer's decoder.

    .venv/bin/python bench/codec.py [--records 1000] [--trials 5]

100-byte values, no keys, no headers (as `strom perf`), batches of `--records` records; each
figure is the median of `--trials`. kafka-python's builder and reader run beside them as an
outside reference (aiokafka's compiled codec is not a dependency here). Prints one Markdown
table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from strom.client.records import ConsumerRecord
from strom.storage import compiled_codec
from strom.storage.batch_validation import check_record_framing_py
from strom.storage.record_batch import HEADER_SIZE, BatchHeader, PyBatchBuilder, parse_header
from strom.storage.record_decode import _decode_records_py

NOW_MS = 1_700_000_000_000
VALUE = b"v" * 100


def _rate(work: Callable[[], None], records: int, trials: int, rounds: int) -> float:
    """Median records/s of `rounds` calls of `work` (each handles `records`)."""
    rates = []
    for _ in range(trials):
        started = time.perf_counter()
        for _ in range(rounds):
            work()
        rates.append(rounds * records / (time.perf_counter() - started))
    return statistics.median(rates)


def _encoder(builder: Callable[[], object], records: int) -> Callable[[], None]:
    def work() -> None:
        batch = builder()
        append = batch.append  # type: ignore[attr-defined]
        for i in range(records):
            append(NOW_MS + i, None, VALUE)
        batch.build()  # type: ignore[attr-defined]

    return work


def _kafka_python_encoder(records: int) -> Callable[[], None]:
    from kafka.record.default_records import DefaultRecordBatchBuilder

    def work() -> None:
        builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 30)
        for i in range(records):
            builder.append(i, NOW_MS + i, None, VALUE, [])
        builder.build()

    return work


def _kafka_python_reader(batch: bytes) -> Callable[[], None]:
    from kafka.record.default_records import DefaultRecordBatch

    def work() -> None:
        for _ in DefaultRecordBatch(batch):
            pass

    return work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1000, help="records per batch")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    codec = compiled_codec.codec
    if codec is None:
        sys.exit(f"the compiled codec is not in use: {compiled_codec.describe()}")
    n, trials = args.records, args.trials
    rounds = max(1, 40_000 // n)
    builder = PyBatchBuilder()
    for i in range(n):
        builder.append(NOW_MS + i, None, VALUE)
    batch = builder.build()
    header: BatchHeader = parse_header(batch)

    class Compiled(PyBatchBuilder.__mro__[1], codec.BatchBuilderCore):  # type: ignore[misc,name-defined]
        __slots__ = ()
        _append_reference = PyBatchBuilder.append

    def frame(fn: Callable[..., object]) -> Callable[[], None]:
        return lambda: fn(batch, header, HEADER_SIZE, len(batch)) and None

    def decode(fn: Callable[..., object]) -> Callable[[], None]:
        return lambda: (
            fn(batch, HEADER_SIZE, len(batch), header, ConsumerRecord, "t", 0, 0) and None
        )

    rows = [
        ("encode (BatchBuilder.append + build)", _encoder(PyBatchBuilder, n), _encoder(Compiled, n),
         _kafka_python_encoder(n)),
        ("leader framing walk", frame(check_record_framing_py), frame(codec.check_record_framing),
         None),
        ("consumer decode to ConsumerRecord", decode(_decode_records_py),
         decode(codec.decode_records), _kafka_python_reader(batch)),
    ]  # fmt: skip
    print(f"python {sys.version.split()[0]}, {n} records of 100 B per batch, median of {trials}")
    print()
    print("| loop | pure Python rec/s | compiled rec/s | speed-up | compiled ns/record "
          "| kafka-python rec/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for label, pure, compiled, kafka in rows:
        pure_rate = _rate(pure, n, trials, rounds)
        compiled_rate = _rate(compiled, n, trials, rounds * 10)
        kafka_rate = f"{_rate(kafka, n, trials, rounds):,.0f}" if kafka else "—"
        print(
            f"| {label} | {pure_rate:,.0f} | {compiled_rate:,.0f} | "
            f"{compiled_rate / pure_rate:.1f}× | {1e9 / compiled_rate:.0f} | {kafka_rate} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

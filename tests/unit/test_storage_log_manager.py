"""LogManager: partition folders of a data directory, the directory lock, deletion."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from strom.storage.errors import InconsistentTopicIdError, LogDirLockedError
from strom.storage.log_manager import LogManager
from strom.storage.record_batch import Record, encode_batch

TS = 1_700_000_000_000


def _hold_lock(path: str, ready: Any, stop: Any) -> None:
    manager = LogManager(path, now_ms=TS)
    ready.set()
    stop.wait(30)
    manager.close()


def test_second_manager_on_the_same_directory_fails_clearly(tmp_path: Path) -> None:
    first = LogManager(str(tmp_path), now_ms=TS)
    with pytest.raises(LogDirLockedError) as info:
        LogManager(str(tmp_path), now_ms=TS)
    assert str(tmp_path) in str(info.value) and "in use by another process" in str(info.value)
    first.close()
    LogManager(str(tmp_path), now_ms=TS).close()  # released on close


def test_lock_holds_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, stop))
    child.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LogDirLockedError) as info:
            LogManager(str(tmp_path), now_ms=TS)
        assert f"pid {child.pid}" in str(info.value)
    finally:
        stop.set()
        child.join(30)
    LogManager(str(tmp_path), now_ms=TS).close()


def test_partitions_are_created_reloaded_and_deleted(tmp_path: Path) -> None:
    with LogManager(str(tmp_path), now_ms=TS) as manager:
        for p in range(3):
            log = manager.get_or_create_log("order-events", p, topic_id="id-1", now_ms=TS)
            log.append(encode_batch([Record(None, b"x", (), TS)] * (p + 1)), 0, now_ms=TS)
        manager.get_or_create_log("my-topic-2", 10, topic_id="id-2", now_ms=TS)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "my-topic-2-10",
        "order-events-0",
        "order-events-1",
        "order-events-2",
    ]
    with LogManager(str(tmp_path), now_ms=TS) as manager:
        assert sorted(manager.logs()) == [("my-topic-2", 10)] + [
            ("order-events", p) for p in range(3)
        ]
        assert [manager.logs()[("order-events", p)].log_end_offset for p in range(3)] == [1, 2, 3]
        with pytest.raises(InconsistentTopicIdError):
            manager.get_or_create_log("order-events", 0, topic_id="id-9", now_ms=TS)
        assert manager.delete_log("order-events", 1)
        assert not manager.delete_log("order-events", 1)
        fresh = manager.get_or_create_log("order-events", 1, topic_id="id-9", now_ms=TS)
        assert fresh.log_end_offset == 0 and fresh.topic_id == "id-9"
        with pytest.raises(ValueError):
            manager.get_or_create_log("bad/name", 0, topic_id="x", now_ms=TS)


def test_leftover_delete_folders_are_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / "t-0.0-delete").mkdir()
    (tmp_path / "t-0.0-delete" / "00000000000000000000.log").write_bytes(b"x")
    LogManager(str(tmp_path), now_ms=TS).close()
    assert not (tmp_path / "t-0.0-delete").exists()

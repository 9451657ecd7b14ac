"""The partition logs of one data directory (Kafka's LogManager for one `log.dirs` entry).

Layout::

    <data dir>/
        .lock                      held with fcntl.flock by the process using the directory
        <topic>-<partition>/       one PartitionLog each (see `partition_log`)
        <topic>-<partition>.<n>-delete/   a deleted log whose removal was interrupted

Rules:
- One process per data directory: a second LogManager (in any process) fails with
  `LogDirLockedError` naming the holder's pid. The lock dies with the process.
- A log that cannot be opened (damaged checkpoint, unreadable file) fails alone: it is recorded
  in `failed` with the reason, its folder is left as it is for an operator, and every other log
  opens. Asking for a failed log raises `LogFailedError`; `mark_failed` records a log that fails
  later (it is closed as a crash would). Only a restart tries a failed log again.
- Deletion renames the folder to a `-delete` name first (one atomic step), then removes it;
  leftovers of an interrupted deletion are removed at the next start.
- Topic names follow Kafka's rule: 1-249 characters of [a-zA-Z0-9._-], not "." or "..".
- Time comes from callers (`now_ms`).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Mapping

from .durability import fsync_dir
from .errors import LogDirLockedError, LogFailedError, StorageError
from .log_config import LogConfig
from .partition_log import PartitionLog
from .partition_metadata import check_topic_id

LOCK_FILE = ".lock"
_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_LOG_DIR = re.compile(r"^(.+)-(\d+)$")
_DELETE_SUFFIX = "-delete"


def partition_dir_name(topic: str, partition: int) -> str:
    if not _TOPIC.match(topic) or topic in (".", ".."):
        raise ValueError(f"illegal topic name {topic!r}: use 1-249 of [a-zA-Z0-9._-]")
    if partition < 0:
        raise ValueError(f"partition must be ≥ 0, got {partition}")
    return f"{topic}-{partition}"


class LogManager:
    def __init__(
        self, data_dir: str, default_config: LogConfig | None = None, *, now_ms: int
    ) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.default_config = default_config or LogConfig()
        os.makedirs(self.data_dir, exist_ok=True)
        self._lock_fd = self._lock()
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self.failed: dict[tuple[str, int], str] = {}  # logs that could not be used: the reason
        try:
            self._load(now_ms)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> int:
        path = os.path.join(self.data_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LogDirLockedError(
                f"data directory {self.data_dir} is in use by another process (pid {holder}); "
                f"stop it first, or give this node another log.dirs entry"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _load(self, now_ms: int) -> None:
        for name in sorted(os.listdir(self.data_dir)):
            path = os.path.join(self.data_dir, name)
            if not os.path.isdir(path):
                continue
            if name.endswith(_DELETE_SUFFIX):
                shutil.rmtree(path, ignore_errors=True)
                continue
            match = _LOG_DIR.match(name)
            if match is None or not _TOPIC.match(match.group(1)):
                continue
            key = (match.group(1), int(match.group(2)))
            try:
                self._logs[key] = PartitionLog.open(path, self.default_config, now_ms=now_ms)
            except (OSError, StorageError) as exc:
                self.failed[key] = f"{type(exc).__name__}: {exc}"

    # ---- access --------------------------------------------------------------------------

    def get_log(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def logs(self) -> dict[tuple[str, int], PartitionLog]:
        return dict(self._logs)

    def get_or_create_log(
        self,
        topic: str,
        partition: int,
        *,
        topic_id: str,
        now_ms: int,
        config: LogConfig | None = None,
    ) -> PartitionLog:
        """The log of `topic`-`partition`, created if missing. `topic_id` is checked against
        the folder's (`InconsistentTopicIdError` if the folder is an old incarnation's)."""
        self._check_open()
        key = (topic, partition)
        if key in self.failed:
            raise LogFailedError(f"{partition_dir_name(topic, partition)}: {self.failed[key]}")
        log = self._logs.get(key)
        if log is None:
            path = os.path.join(self.data_dir, partition_dir_name(topic, partition))
            log = PartitionLog.open(
                path, config or self.default_config, now_ms=now_ms, topic_id=topic_id
            )
            fsync_dir(self.data_dir)
            self._logs[key] = log
            return log
        log.topic_id = check_topic_id(log.directory, topic_id)
        if config is not None:
            log.config = config
        return log

    def create_log_files(
        self, topic: str, partition: int, *, topic_id: str, now_ms: int, config: LogConfig
    ) -> PartitionLog:
        """Create a new partition's folder and files (fsynced, a few milliseconds each) without
        registering the log: it touches no state of this manager, so it may run in a worker
        thread while the owner works on. The owner then `adopt`s it. The caller makes sure no
        one else opens the same folder meanwhile."""
        path = os.path.join(self.data_dir, partition_dir_name(topic, partition))
        log = PartitionLog.open(path, config, now_ms=now_ms, topic_id=topic_id)
        fsync_dir(self.data_dir)
        return log

    def adopt(self, topic: str, partition: int, log: PartitionLog) -> bool:
        """Register a log made by `create_log_files`; False (the caller closes it) when the
        partition already has one or failed."""
        self._check_open()
        key = (topic, partition)
        if key in self._logs or key in self.failed:
            return False
        self._logs[key] = log
        return True

    def mark_failed(self, topic: str, partition: int, reason: str) -> None:
        """A log that failed in use: close it as a crash would, and serve it no more."""
        self._check_open()
        log = self._logs.pop((topic, partition), None)
        if log is not None:
            log.close(clean=False)
        self.failed[(topic, partition)] = reason

    def delete_log(self, topic: str, partition: int) -> bool:
        """Delete a partition's log and folder (a failed one's too). False if there is none."""
        self._check_open()
        key = (topic, partition)
        log = self._logs.pop(key, None)
        failed = self.failed.pop(key, None)
        if log is None and failed is None:
            return False
        directory = os.path.join(self.data_dir, partition_dir_name(topic, partition))
        if log is not None:
            log.close(clean=False)
            directory = log.directory
        if not os.path.exists(directory):
            return True
        n = 0
        while True:
            doomed = f"{directory}.{n}{_DELETE_SUFFIX}"
            if not os.path.exists(doomed):
                break
            n += 1
        os.rename(directory, doomed)
        fsync_dir(self.data_dir)
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    # ---- maintenance ---------------------------------------------------------------------

    def delete_old_segments(
        self, high_watermarks: Mapping[tuple[str, int], int], now_ms: int
    ) -> int:
        """Run retention on every log whose high watermark is given; returns segments deleted."""
        deleted = 0
        for key, log in self._logs.items():
            if key in high_watermarks:
                deleted += log.delete_old_segments(high_watermarks[key], now_ms=now_ms)
        return deleted

    def _check_open(self) -> None:
        if self._lock_fd < 0:
            raise RuntimeError(f"log manager of {self.data_dir} is closed")

    def close(self) -> None:
        """Close every log cleanly and release the directory lock."""
        if self._lock_fd < 0:
            return
        try:
            for log in self._logs.values():
                log.close()
        finally:
            self._logs.clear()
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def __enter__(self) -> LogManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Typed errors of the storage layer.

Each error carries the Kafka error name a broker returns for it (DESIGN.md §9), so the node maps
storage failures to per-partition error codes without string matching. Errors are split by blame
and by whether retrying can help:

- `CorruptRecordError`: the bytes a client or leader sent are bad (CORRUPT_MESSAGE, INVALID_RECORD,
  MESSAGE_TOO_LARGE, INVALID_TIMESTAMP, UNSUPPORTED_COMPRESSION_TYPE). Nothing was written.
- `OffsetOutOfRangeError`: a read or lookup asked for an offset the log does not hold.
- `UnexpectedAppendOffsetError`: a follower append that does not continue the log.
- `LogCorruptionError`: bytes already on disk are damaged (below the recovery point, or a file
  that cannot be parsed). Fatal for the partition until an operator looks: never served.
- `LogFailedError`: a log that could not be opened or failed in use; served no more until a
  restart (Kafka's offline log directory, for one partition).
- `LogDirLockedError`, `InconsistentTopicIdError`: the data directory is not ours to use.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class. `error_name` is the Kafka error code name; `retriable` tells callers whether
    trying again (possibly elsewhere) can succeed."""

    error_name = "KAFKA_STORAGE_ERROR"
    retriable = False


class CorruptRecordError(StorageError):
    """A record batch failed validation; nothing of the append was written.

    Kafka treats CORRUPT_MESSAGE as retriable (the corruption may have happened in transit), and
    the other names as fatal for the request.
    """

    def __init__(self, message: str, error_name: str = "CORRUPT_MESSAGE") -> None:
        super().__init__(f"{error_name}: {message}")
        self.detail = message
        self.error_name = error_name
        self.retriable = error_name == "CORRUPT_MESSAGE"


class OffsetOutOfRangeError(StorageError):
    """The requested offset is below the log start offset or above the log end offset.

    Retriable for a consumer in the sense that it must reset its position and read again.
    """

    error_name = "OFFSET_OUT_OF_RANGE"
    retriable = True

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"OFFSET_OUT_OF_RANGE: offset {offset} is outside the log's range "
            f"[{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class UnexpectedAppendOffsetError(StorageError):
    """A follower append whose first offset is not the log end offset, or whose batches are not
    contiguous. The replica fetcher must truncate or re-fetch; the log is unchanged."""

    error_name = "OFFSET_OUT_OF_RANGE"
    retriable = True


class LogCorruptionError(StorageError):
    """Bytes on disk are damaged where the log promised they were durable. Names the file and the
    byte position so an operator can inspect it; the damaged bytes are never served."""

    error_name = "KAFKA_STORAGE_ERROR"
    retriable = False

    def __init__(self, path: str, position: int, reason: str) -> None:
        super().__init__(f"{path} at byte {position}: {reason}")
        self.path = path
        self.position = position
        self.reason = reason


class LogFailedError(StorageError):
    """The log of a partition failed (see `LogManager.failed`); the message says why."""

    error_name = "KAFKA_STORAGE_ERROR"
    retriable = False


class LogDirLockedError(StorageError):
    """Another process holds the data directory's lock file."""


class InconsistentTopicIdError(StorageError):
    """A partition folder belongs to another incarnation of the topic (deleted and re-created)."""

    error_name = "INCONSISTENT_TOPIC_ID"

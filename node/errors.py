"""The node's refusals: a Kafka error code (strom.v1 ErrorCode) and a message the user can act
on. Each layer raises its own subclass; request handlers put `code` and `message` in the
per-partition or per-resource result."""

from __future__ import annotations


class CodedError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

"""The node's refusals: a Kafka error code (strom.v1 ErrorCode) and a message the user can act
on. Each layer raises its own subclass; request handlers put `code` and `message` in the
per-partition or per-resource result with `answer_refusal`."""

from __future__ import annotations

from typing import Protocol, TypeVar

from strom.v1 import common_pb2


class CodedError(Exception):
    # An int, not only strom's ErrorCode: the group coordinator also answers Kafka codes that
    # strom's gRPC API has no name for (INCONSISTENT_GROUP_PROTOCOL); proto3 enums carry them.
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Answer(Protocol):
    """A per-partition or per-resource result message: its error code and message."""

    error_code: common_pb2.ErrorCode.ValueType
    error_message: str


def as_error_code(code: int) -> common_pb2.ErrorCode.ValueType:
    """`code` for a result's ErrorCode field (any int: proto3 enums are open)."""
    return common_pb2.ErrorCode.ValueType(code)


AnswerT = TypeVar("AnswerT", bound=Answer)


def answer_refusal(result: AnswerT, exc: CodedError) -> AnswerT:
    """Fill `result`'s error code and message from a refusal; returns `result`."""
    result.error_code = as_error_code(exc.code)
    result.error_message = exc.message
    return result

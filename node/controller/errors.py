"""Errors the controller answers with: a Kafka error code and a message the user can act on."""

from __future__ import annotations


class ControllerError(Exception):
    """A request the controller refuses; `code` is a strom.v1 ErrorCode (Kafka's number)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

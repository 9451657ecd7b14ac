"""Errors the controller answers with: a Kafka error code and a message the user can act on."""

from __future__ import annotations

from strom.node.errors import CodedError


class ControllerError(CodedError):
    """A request the controller refuses; `code` is a strom.v1 ErrorCode (Kafka's number)."""

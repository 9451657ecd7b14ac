"""One long-lived bidirectional stream to one broker for one RPC (Produce or Fetch), issue #17.

Used when the client asks for it (`ClusterClient(streaming=True)`); off by default, because in
bench/stream_rpc.py it was no faster than a unary call per request (bench/RESULTS.md).

A unary gRPC call costs the client and the broker 0.5–1 ms of CPU each in Python; a message on an
open stream costs a fraction of that. `BrokerStream.call(request)` behaves like the unary stub
method it replaces: it returns the same response message, or raises the same
`grpc.aio.AioRpcError` the unary call would (the broker answers a refused request with its status
on the stream), so `ClusterClient.call` maps errors, deadlines and retries exactly as before.

- Requests carry an id the answer repeats; answers come back as they are ready.
- At most `in_flight_max` requests are outstanding on the stream; further callers wait for a slot.
- The stream opens on first use. When it breaks (the broker restarted, the connection dropped),
  every outstanding request fails with the stream's status (UNAVAILABLE for a lost connection:
  retriable, as a unary call's would be) and the next call opens a new stream.
- A broker that does not offer the stream (an older broker, or a secured listener, which serves
  unary calls only) answers UNIMPLEMENTED: this broker is then called unary from then on, and the
  requests that met the refusal are sent unary (the broker never saw them).
- Nothing is written on a stream before the broker accepted it: the broker's first act is to
  send initial metadata carrying `STREAM_ACCEPTED` (node/broker/streams.py). Metadata without it
  is a refusal (gRPC's trailers-only answer), whose status follows. This keeps the refusal
  deterministic: were a request written while the refusal is on its way, grpc.aio's writer
  would find the call finished in its core and mark it INTERNAL ("Failed execute_batch:
  SendMessageOperation", `_write` in grpc/aio/_call.py) before the UNIMPLEMENTED status is read,
  and the client could not tell a refusal from a failure. A refused stream's request iterator
  also ends only once the status is read, so gRPC does not half-close a call it has not seen
  finish (a failed half-close cancels the call, which would hide the status in the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")

# Requests outstanding on one stream. The producer sends at most max.in.flight (5) batches per
# partition and the consumer one fetch per broker, so this bounds only unusual callers.
STREAM_IN_FLIGHT_MAX = 64

# The initial metadata entry by which a broker says it serves the stream it was asked for.
STREAM_ACCEPTED = ("strom-stream", "accepted")


class StreamUnsupported(Exception):
    """The broker does not offer this stream (it answered UNIMPLEMENTED)."""


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class BrokerStream(Generic[Req, Resp]):
    def __init__(
        self,
        open_stream: Callable[[AsyncIterator[Any]], Any],
        envelope: Callable[..., Any],
        unary: Callable[[Req], Awaitable[Resp]],
        in_flight_max: int = STREAM_IN_FLIGHT_MAX,
    ) -> None:
        """`open_stream`: the stub's stream method (takes the request iterator); `envelope`:
        the *StreamRequest message class; `unary`: the stub's unary method, the fallback."""
        self._open_stream = open_stream
        self._envelope = envelope
        self._unary = unary
        self._slots = asyncio.Semaphore(in_flight_max)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Resp]] = {}
        self._outgoing: asyncio.Queue[Any] | None = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.unsupported = False  # the broker answered UNIMPLEMENTED: unary from now on
        self.opened = 0  # streams opened so far (tests, diagnostics)

    async def call(self, request: Req) -> Resp:
        if self.unsupported:
            return await self._unary(request)
        async with self._slots:
            try:
                return await self._exchange(request)
            except StreamUnsupported:
                return await self._unary(request)

    async def _exchange(self, request: Req) -> Resp:
        outgoing = self._ensure_open()
        request_id = next(self._ids)
        answer: asyncio.Future[Resp] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            outgoing.put_nowait(self._envelope(id=request_id, request=request))
            return await answer
        finally:
            self._pending.pop(request_id, None)

    def _ensure_open(self) -> asyncio.Queue[Any]:
        if self._outgoing is None:
            outgoing: asyncio.Queue[Any] = asyncio.Queue()
            accepted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            call = self._open_stream(self._drain(outgoing, accepted))
            self._outgoing, self._call = outgoing, call
            self._reader = asyncio.get_running_loop().create_task(
                self._read(call, outgoing, accepted)
            )
            self.opened += 1
        return self._outgoing

    @staticmethod
    async def _drain(
        outgoing: asyncio.Queue[Any], accepted: asyncio.Future[bool]
    ) -> AsyncIterator[Any]:
        # gRPC's own task writes what this yields, one message at a time, with flow control;
        # it writes nothing before the broker accepted the stream (the module docstring).
        if not await accepted:
            return
        while (envelope := await outgoing.get()) is not None:
            yield envelope

    async def _read(
        self, call: Any, outgoing: asyncio.Queue[Any], accepted: asyncio.Future[bool]
    ) -> None:
        failure: BaseException = rpc_error(grpc.StatusCode.UNAVAILABLE, "the stream failed")
        try:
            key, value = STREAM_ACCEPTED
            if (key, value) in tuple(await call.initial_metadata()):
                accepted.set_result(True)
            # else a refusal: `read` raises its status (or returns EOF for a bare OK).
            while (message := await call.read()) is not grpc.aio.EOF:
                waiting = self._pending.get(message.id)
                if waiting is None or waiting.done():
                    continue  # its caller gave up (deadline) or an id the broker made up
                if message.WhichOneof("answer") == "error":
                    code = _status(message.error.status_code)
                    waiting.set_exception(rpc_error(code, message.error.message))
                else:
                    waiting.set_result(message.response)
            failure = rpc_error(grpc.StatusCode.UNAVAILABLE, "the broker ended the stream")
        except grpc.aio.AioRpcError as exc:
            failure = exc
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED and not accepted.done():
                log.info("broker does not offer %s: unary calls instead", type(self).__name__)
                self.unsupported = True
                failure = StreamUnsupported()
        except asyncio.CancelledError:
            failure = rpc_error(grpc.StatusCode.CANCELLED, "the client closed the stream")
            raise
        except Exception as exc:  # a bug, not an answer: its callers see it as a failed call
            log.exception("reading the stream failed")
            failure = rpc_error(grpc.StatusCode.UNKNOWN, f"reading the stream failed: {exc!r}")
        finally:
            if self._outgoing is outgoing:
                self._outgoing, self._call, self._reader = None, None, None
            if not accepted.done():
                accepted.set_result(False)  # the call has ended: the iterator ends unwritten
            outgoing.put_nowait(None)  # ends the request iterator
            # Only the requests sent on this stream: every request still pending was.
            for waiting in list(self._pending.values()):
                if not waiting.done():
                    waiting.set_exception(failure)

    async def close(self) -> None:
        call, reader = self._call, self._reader
        if call is not None:
            call.cancel()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


def _status(code: int) -> grpc.StatusCode:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN

"""What one request costs in Python gRPC (grpc.aio): a unary call against a message on an open
bidirectional stream, with no broker work behind it, client and server in two processes.

    cd bench && ../.venv/bin/python grpc_call_cost.py [--requests 20000] [--in-flight 8] [--runs 3]

The server answers every request at once with an empty ProduceResponse. Three ways to send a
ProduceRequest carrying one 1 KiB batch, `--in-flight` requests outstanding at any time:

- unary: one `Produce`-shaped unary call per request (what the SDK does by default);
- stream: strom's own stream path, client/broker_stream.py `BrokerStream` to
  node/broker/streams.py `serve_stream` (ids, a queue each side, answers as ready);
- raw stream: the least a stream can do in grpc.aio: the client writes and reads on the call
  object, the server's handler yields one answer per request in order.

Reports requests/s and the CPU each request costs the client and the server (user + system
time, /proc), medians of `--runs`. The question it answers: how much of a unary call's cost a
stream saves at all in this runtime, and how much strom's stream layer adds on top of that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import grpc

from strom.client.broker_stream import BrokerStream
from strom.node.broker.streams import serve_stream
from strom.v1 import broker_pb2

UNARY = "/bench.Echo/Unary"
STREAM = "/bench.Echo/Stream"
RAW = "/bench.Echo/RawStream"
ANSWER = broker_pb2.ProduceResponse()


async def _answer(request: Any) -> broker_pb2.ProduceResponse:
    return ANSWER


async def _unary(request: Any, context: Any) -> broker_pb2.ProduceResponse:
    return ANSWER


async def _stream(requests: Any, context: Any) -> Any:
    async for answer in serve_stream(requests, context, _answer, broker_pb2.ProduceStreamResponse):
        yield answer


async def _raw(requests: Any, context: Any) -> Any:
    async for envelope in requests:
        yield broker_pb2.ProduceStreamResponse(id=envelope.id, response=ANSWER)


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(
            _unary,
            broker_pb2.ProduceRequest.FromString,
            broker_pb2.ProduceResponse.SerializeToString,
        ),
        "Stream": grpc.stream_stream_rpc_method_handler(
            _stream,
            broker_pb2.ProduceStreamRequest.FromString,
            broker_pb2.ProduceStreamResponse.SerializeToString,
        ),
        "RawStream": grpc.stream_stream_rpc_method_handler(
            _raw,
            broker_pb2.ProduceStreamRequest.FromString,
            broker_pb2.ProduceStreamResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", handlers)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request() -> broker_pb2.ProduceRequest:
    out = broker_pb2.ProduceRequest(acks=1, timeout_ms=30_000)
    out.topics.add(name="t").partitions.add(partition=0, records=b"\0" * 1024)
    return out


async def run_unary(channel: grpc.aio.Channel, count: int, in_flight: int) -> None:
    call = channel.unary_unary(
        UNARY, broker_pb2.ProduceRequest.SerializeToString, broker_pb2.ProduceResponse.FromString
    )
    message = request()

    async def worker(n: int) -> None:
        for _ in range(n):
            await call(message)

    await asyncio.gather(*(worker(count // in_flight) for _ in range(in_flight)))


async def run_stream(channel: grpc.aio.Channel, count: int, in_flight: int) -> None:
    open_stream = channel.stream_stream(
        STREAM,
        broker_pb2.ProduceStreamRequest.SerializeToString,
        broker_pb2.ProduceStreamResponse.FromString,
    )
    unary = channel.unary_unary(
        UNARY, broker_pb2.ProduceRequest.SerializeToString, broker_pb2.ProduceResponse.FromString
    )
    stream: BrokerStream[Any, Any] = BrokerStream(
        open_stream, broker_pb2.ProduceStreamRequest, unary
    )
    message = request()

    async def worker(n: int) -> None:
        for _ in range(n):
            await stream.call(message)

    await asyncio.gather(*(worker(count // in_flight) for _ in range(in_flight)))
    assert not stream.unsupported
    await stream.close()


async def run_raw(channel: grpc.aio.Channel, count: int, in_flight: int) -> None:
    call = channel.stream_stream(
        RAW,
        broker_pb2.ProduceStreamRequest.SerializeToString,
        broker_pb2.ProduceStreamResponse.FromString,
    )()
    message = request()
    slots = asyncio.Semaphore(in_flight)
    total = count // in_flight * in_flight

    async def write() -> None:
        for i in range(total):
            await slots.acquire()
            await call.write(broker_pb2.ProduceStreamRequest(id=i, request=message))
        await call.done_writing()

    async def read() -> None:
        for _ in range(total):
            await call.read()
            slots.release()

    await asyncio.gather(write(), read())


MODES = {"unary": run_unary, "stream": run_stream, "raw stream": run_raw}


async def measure(
    port: int, server_pid: int, mode: str, count: int, in_flight: int
) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await MODES[mode](channel, 200, in_flight)  # connect and warm up
        client0, server0, t0 = time.process_time(), cpu_s(server_pid), time.perf_counter()
        await MODES[mode](channel, count, in_flight)
        elapsed = time.perf_counter() - t0
        client, server = time.process_time() - client0, cpu_s(server_pid) - server0
    done = count // in_flight * in_flight
    return {
        "rate": done / elapsed,
        "client_us": client / done * 1e6,
        "server_us": server / done * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        for run in range(args.runs):
            for mode in MODES:
                row = asyncio.run(measure(port, server.pid, mode, args.requests, args.in_flight))
                results[mode].append(row)
                print(f"run {run} {mode}: {row} load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(10)
    print(f"\n`{' '.join(sys.argv)}`, medians of {args.runs}\n")
    print("| way | requests/s | client CPU µs/request | server CPU µs/request |")
    print("|---|---:|---:|---:|")
    for mode, rows in results.items():
        rate, client, server_us = (
            statistics.median(r[k] for r in rows) for k in ("rate", "client_us", "server_us")
        )
        print(f"| {mode} | {rate:,.0f} | {client:.0f} | {server_us:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

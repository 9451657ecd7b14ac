"""The Kafka listener's framing (strom.node.kafka.listener) with a stand-in for the handlers:
answers leave in request order, and a bad frame, an oversized one, an unknown API, a handler
failure or an idle client closes that connection only."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from prometheus_client import REGISTRY

from strom.node.kafka.listener import KafkaListener, Session
from strom.node.kafka.messages import API_VERSIONS, METADATA, Api


def frame(api_key: int, version: int, correlation_id: int, body: bytes = b"") -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, 3) + b"cli"
    if version >= 9 and api_key == METADATA.key:
        header += b"\x00"  # request header v2: tagged fields
    data = header + body
    return struct.pack(">i", len(data)) + data


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    data = await reader.readexactly(size)
    return struct.unpack_from(">i", data)[0], data[4:]


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 5) == b""


class Handlers:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    async def __call__(self, session: Session, api: Api, version: int, body: dict[str, Any]) -> Any:
        self.seen.append((api.name, version))
        if api.key == METADATA.key:
            if body["topics"] and body["topics"][0]["name"] == "boom":
                raise RuntimeError("a handler bug")
            # The first request waits longest: answers must still leave in request order.
            delay = {"slow": 0.2, "medium": 0.1}.get(body["topics"][0]["name"], 0)
            await asyncio.sleep(delay)
            return {"brokers": [], "topics": [], "cluster_id": None, "controller_id": -1}
        return {"error_code": 0, "api_keys": [], "throttle_time_ms": 0}


def metadata_body(name: str) -> bytes:
    return METADATA.request.encode({"topics": [{"name": name}]}, 1)


def test_framing_order_and_bad_input() -> None:
    async def run() -> None:
        handlers = Handlers()
        listener = KafkaListener("KAFKA", "127.0.0.1", 0, handlers, 1024, idle_timeout_s=0.5)
        await listener.start()
        port = listener.bound_port
        try:
            # Pipelined requests on one connection: answered in order.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for cid, name in ((1, "slow"), (2, "medium"), (3, "fast")):
                writer.write(frame(METADATA.key, 1, cid, metadata_body(name)))
            writer.write(frame(API_VERSIONS.key, 0, 4))
            await writer.drain()
            ids = [(await read_answer(reader))[0] for _ in range(4)]
            assert ids == [1, 2, 3, 4]
            # Idle for longer than connections.max.idle.ms: closed.
            assert await closed(reader)
            writer.close()

            async def one(data: bytes) -> bool:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(data)
                await writer.drain()
                try:
                    return await closed(reader)
                finally:
                    writer.close()

            assert await one(struct.pack(">i", 2048) + bytes(10))  # above the request limit
            assert await one(struct.pack(">i", -1))  # a negative size
            assert await one(frame(999, 0, 1))  # an unknown API key
            assert await one(frame(METADATA.key, 99, 1))  # a version not served
            assert await one(frame(METADATA.key, 1, 1, b"\x00\x00\x00\x05ab"))  # truncated body
            assert await one(frame(METADATA.key, 1, 1, metadata_body("boom")))  # handler bug
            count = len(handlers.seen)
            # The listener still serves others.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(frame(API_VERSIONS.key, 2, 7))
            await writer.drain()
            assert (await read_answer(reader))[0] == 7
            writer.close()
            assert len(handlers.seen) == count + 1
            # Every answered request is timed per API and version (/metrics).
            timed = REGISTRY.get_sample_value(
                "strom_kafka_request_duration_seconds_count", {"api": "Metadata", "version": "1"}
            )
            assert timed is not None and timed >= 3
        finally:
            await listener.stop()

    asyncio.run(run())

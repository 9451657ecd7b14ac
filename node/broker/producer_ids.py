"""Producer ids for InitProducerId: blocks allocated by the active controller in the metadata
log, handed out one by one, so ids are unique across brokers and restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from strom.node.peers import ControllerClient, ControllerUnavailable
from strom.v1 import common_pb2, controller_pb2


class ProducerIdAllocator:
    """Hands out producer ids from blocks the active controller allocates in the metadata log,
    so ids are unique across brokers and restarts."""

    def __init__(
        self, controller: ControllerClient, broker_id: int, broker_epoch: Callable[[], int]
    ):
        self.controller = controller
        self.broker_id = broker_id
        self.broker_epoch = broker_epoch
        self._next = 0
        self._end = 0
        self._lock = asyncio.Lock()

    async def next_id(self) -> int:
        async with self._lock:
            if self._next >= self._end:
                request = controller_pb2.AllocateProducerIdsRequest(
                    broker_id=self.broker_id, broker_epoch=self.broker_epoch()
                )
                response = await self.controller.call(
                    lambda s: s.AllocateProducerIds, request, deadline_s=5.0
                )
                if response.status.error_code != common_pb2.NONE:
                    raise ControllerUnavailable(response.status.error_message)
                self._next = response.producer_id_start
                self._end = response.producer_id_start + response.producer_id_len
            producer_id = self._next
            self._next += 1
            return producer_id

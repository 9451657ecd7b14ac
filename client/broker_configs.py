"""Admin.describe_broker_configs / alter_broker_configs: dynamic broker configs (Kafka's
`kafka-configs --entity-type brokers`; the node side is node/dynamic_config.py).

`broker_id=None` is the default of every broker (`--entity-default`). A broker describes only its
own configs, so describing one broker asks that broker, as Kafka's admin client does; changes
go through any broker to the controller, which stores them in the metadata log. Needs
DESCRIBE_CONFIGS / ALTER_CONFIGS on the cluster when the cluster's authorizer is on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from strom.v1 import admin_pb2, common_pb2, metadata_pb2

from .cluster import ClusterClient
from .errors import FatalError, error_from_code

SOURCE_NAMES = {  # Kafka's ConfigEntry.ConfigSource names
    admin_pb2.CONFIG_SOURCE_DYNAMIC_TOPIC: "DYNAMIC_TOPIC_CONFIG",
    admin_pb2.CONFIG_SOURCE_DYNAMIC_BROKER: "DYNAMIC_BROKER_CONFIG",
    admin_pb2.CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER: "DYNAMIC_DEFAULT_BROKER_CONFIG",
    admin_pb2.CONFIG_SOURCE_STATIC_BROKER: "STATIC_BROKER_CONFIG",
    admin_pb2.CONFIG_SOURCE_DEFAULT: "DEFAULT_CONFIG",
}


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    name: str
    value: str  # empty when sensitive
    source: str  # Kafka's name: DYNAMIC_BROKER_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG, ...
    read_only: bool  # cannot be altered at runtime
    sensitive: bool


def _broker_resource(broker_id: int | None) -> admin_pb2.ConfigResource:
    if broker_id is not None and broker_id < 1:
        raise FatalError(
            common_pb2.INVALID_REQUEST, f"broker id must be 1 or more, got {broker_id}"
        )
    return admin_pb2.ConfigResource(
        resource_type=metadata_pb2.CONFIG_RESOURCE_BROKER,
        resource_name="" if broker_id is None else str(broker_id),
    )


class AsyncBrokerConfigsAdmin:
    cluster: ClusterClient

    async def describe_broker_configs(self, broker_id: int | None = None) -> dict[str, ConfigEntry]:
        """Every config of broker `broker_id` with its value in force and its source; with
        None, the dynamic defaults set for every broker."""
        request = admin_pb2.DescribeConfigsRequest(resources=[_broker_resource(broker_id)])
        if broker_id is None:
            response = await self.cluster.call_any(
                lambda a: self.cluster.admin_stub(a).DescribeConfigs, request
            )
        else:
            await self.cluster.refresh_metadata([])
            address = self.cluster.address_of(broker_id)
            if address is None:
                raise FatalError(
                    common_pb2.BROKER_NOT_AVAILABLE, f"broker {broker_id} is not registered"
                )
            response = await self.cluster.call(
                address, self.cluster.admin_stub(address).DescribeConfigs, request,
                self.cluster.request_timeout_s,
            )  # fmt: skip
        (result,) = response.results
        if result.error_code != common_pb2.NONE:
            raise error_from_code(result.error_code, result.error_message)
        return {
            c.name: ConfigEntry(
                c.name, c.value, SOURCE_NAMES.get(c.source, "UNKNOWN"), c.read_only, c.sensitive
            )
            for c in result.configs
        }

    async def alter_broker_configs(
        self,
        broker_id: int | None,
        set_configs: Mapping[str, str],
        delete: Sequence[str] = (),
        validate_only: bool = False,
    ) -> None:
        """Set and delete dynamic configs of broker `broker_id` (None: of every broker). Every
        broker applies them without a restart; a deleted key falls back to the next source
        (the default of every broker, then the node's file, then strom's default)."""
        ops = [
            admin_pb2.AlterableConfig(name=k, op=admin_pb2.ALTER_CONFIG_SET, value=str(v))
            for k, v in set_configs.items()
        ] + [admin_pb2.AlterableConfig(name=k, op=admin_pb2.ALTER_CONFIG_DELETE) for k in delete]
        request = admin_pb2.IncrementalAlterConfigsRequest(
            resources=[
                admin_pb2.AlterConfigsResource(resource=_broker_resource(broker_id), configs=ops)
            ],
            validate_only=validate_only,
        )
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).IncrementalAlterConfigs, request
        )
        for result in response.results:
            if result.error_code != common_pb2.NONE:
                raise error_from_code(result.error_code, result.error_message)

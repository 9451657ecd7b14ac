"""DescribeConfigs of broker resources (node/dynamic_config.py), as Kafka answers them.

A broker describes only itself ("3" on broker 3: every key with its value in force and where it
comes from; the SDK sends the request to that broker, as Kafka's admin client does), and any
broker describes the dynamic default of every broker ("": only the values set there).
"""

from __future__ import annotations

from strom.node.config import NODE_KEYS, SECRET_KEYS, ConfigError, NodeConfig
from strom.node.dynamic_config import (
    CLUSTER_DEFAULT,
    DYNAMIC_BROKER_KEYS,
    as_text,
    check_broker_resource,
)
from strom.node.metadata.image import BROKER, MetadataImage
from strom.v1 import admin_pb2, common_pb2

DYNAMIC_SOURCES = {
    "broker": admin_pb2.CONFIG_SOURCE_DYNAMIC_BROKER,
    "default": admin_pb2.CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER,
}


def describe_broker(
    config: NodeConfig, image: MetadataImage, result: admin_pb2.DescribeConfigsResult
) -> None:
    """Fill `result` for its broker resource."""
    name = result.resource.resource_name
    try:
        check_broker_resource(name)
    except ConfigError as exc:
        result.error_code = common_pb2.INVALID_REQUEST
        result.error_message = str(exc)
        return
    if name == CLUSTER_DEFAULT:
        defaults = image.configs.get((BROKER, CLUSTER_DEFAULT), {})
        for config_name, value in sorted(defaults.items()):
            result.configs.add(
                name=config_name,
                value=value,
                source=admin_pb2.CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER,
                read_only=config_name not in DYNAMIC_BROKER_KEYS,
            )
        return
    if int(name) != config.node_id:
        result.error_code = common_pb2.INVALID_REQUEST
        result.error_message = (
            f"broker {config.node_id} describes only its own configs; send this to broker {name}"
        )
        return
    for key in NODE_KEYS:
        dynamic = config.dynamic_source(key.name)
        if dynamic is not None:
            source = DYNAMIC_SOURCES[dynamic]
        elif config.static(key.name) == key.default:
            source = admin_pb2.CONFIG_SOURCE_DEFAULT
        else:
            source = admin_pb2.CONFIG_SOURCE_STATIC_BROKER
        sensitive = key.name in SECRET_KEYS
        result.configs.add(
            name=key.name,
            value="" if sensitive else as_text(config[key.name]),
            source=source,
            read_only=key.name not in DYNAMIC_BROKER_KEYS,
            sensitive=sensitive,
        )

"""Dynamic broker configs: the keys Kafka lets `kafka-configs --entity-type brokers` change without
a restart, stored by the controller as ConfigRecords of the BROKER resource in the metadata log, so
every broker applies them in log order and a restarted broker finds them again.

A broker resource is named by a broker id (that broker only) or "" (the default of every broker,
`--entity-default`). The value a node uses is, as in Kafka, the first of: its own dynamic value,
the dynamic default, its YAML file (or environment), strom's default. `DynamicBrokerConfig`
listens to the metadata and lays the dynamic values over the node's `NodeConfig`, which every
component reads at the moment it needs a value; components that keep a value (the replication
throttles, the topics' log configs) are told by the replica manager when a broker config changed.

Which keys: the broker defaults of topic configs (`log.retention.ms`, `log.flush.interval.*`, ...),
the replication throttle rates, and the log cleaner's backoff. `num.replica.fetchers` has no
meaning here (one fetcher per leader broker).
"""

from __future__ import annotations

import logging
from typing import Any

from strom.node.config import NODE_KEYS_BY_NAME, ConfigError, NodeConfig, check_value
from strom.node.metadata.image import BROKER, MetadataDelta, MetadataImage
from strom.node.topic_config import TOPIC_CONFIGS

log = logging.getLogger("strom.config")

CLUSTER_DEFAULT = ""  # the resource name of the default of every broker

DYNAMIC_BROKER_KEYS: frozenset[str] = frozenset(
    {key.broker_key for key in TOPIC_CONFIGS}
    | {
        "follower.replication.throttled.rate",
        "leader.replication.throttled.rate",
        "log.cleaner.backoff.ms",
    }
)


def check_broker_resource(name: str) -> None:
    """A broker resource name is "" or a broker id (the broker need not exist yet, as in
    Kafka: its config waits for it)."""
    if name != CLUSTER_DEFAULT and not (name.isdigit() and int(name) >= 1):
        raise ConfigError(
            f"broker resource {name!r}: must be a broker id (1 or more), or empty for the "
            "default of every broker"
        )


def dynamic_value_text(name: str, raw: str) -> str:
    """Check a dynamic broker config value; the text the metadata log keeps. Raises
    ConfigError naming the key (unknown, not alterable at runtime, or a bad value)."""
    key = NODE_KEYS_BY_NAME.get(name)
    if key is None:
        raise ConfigError(f"unknown broker config {name!r}")
    if name not in DYNAMIC_BROKER_KEYS:
        raise ConfigError(
            f"{name} cannot be altered at runtime (set it in the node's file and restart); "
            f"dynamic keys: {', '.join(sorted(DYNAMIC_BROKER_KEYS))}"
        )
    value = check_value(key, raw)
    return str(value).lower() if isinstance(value, bool) else str(value)


def dynamic_overrides(image: MetadataImage, broker_id: int) -> tuple[dict[str, Any], set[str]]:
    """The typed dynamic values for `broker_id` (its own over the default), and which keys are
    its own. A value this version cannot apply (from another version's controller) is left out
    with a warning: the static value holds."""
    values: dict[str, Any] = {}
    own: set[str] = set()
    for resource, is_own in ((CLUSTER_DEFAULT, False), (str(broker_id), True)):
        for name, raw in image.configs.get((BROKER, resource), {}).items():
            key = NODE_KEYS_BY_NAME.get(name)
            if key is None or name not in DYNAMIC_BROKER_KEYS:
                log.warning("dynamic broker config %s=%r is not one this node applies", name, raw)
                continue
            try:
                values[name] = check_value(key, raw)
            except ConfigError as exc:
                log.warning("dynamic broker config not applied: %s", exc)
                continue
            if is_own:
                own.add(name)
            else:
                own.discard(name)
    return values, own


def broker_configs_changed(delta: MetadataDelta) -> bool:
    return any(resource_type == BROKER for resource_type, _ in delta.changed_configs)


class DynamicBrokerConfig:
    """Lays the metadata log's dynamic broker configs over this node's config; subscribe it to
    the metadata before anything that reads the config on a change."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config

    def on_metadata(self, image: MetadataImage, delta: MetadataDelta) -> None:
        if not broker_configs_changed(delta):
            return
        values, own = dynamic_overrides(image, self.config.node_id)
        changed = self.config.set_dynamic(values, own)
        for name in sorted(changed):
            log.info("broker config %s is now %r", name, self.config[name])


def as_text(value: Any) -> str:
    """A typed config value as configs are described."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)

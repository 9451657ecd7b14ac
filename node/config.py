"""Node configuration: one YAML file per node with Kafka's key names (DESIGN.md §10).

Every knob is declared once, in `NODE_KEYS`: its Kafka-style name, type, default and a one-line
doc. `load_config` reads the YAML file, applies `STROM_<KEY>` environment overrides (dots and
dashes become underscores, upper case: `STROM_NODE_ID`, `STROM_LOG_DIRS`), converts and checks each
value, then `NodeConfig.validate()` checks the relationships between keys. Anything wrong stops the
node at start with a `ConfigError` that names the key.

Keys in `LISTENER_KEYS` (the TLS settings, `sasl.enabled.mechanisms`) may also be set per listener, as Kafka does:
`listener.name.<listener name in lower case>.ssl.key.location` overrides `ssl.key.location` for
that listener only (environment: `STROM_LISTENER_NAME_EXTERNAL_SSL_KEY_LOCATION`).

Topic-level configs (`retention.ms`, `segment.bytes`, ...) are declared in node/topic_config.py, each
with the broker key that supplies its default, as Kafka's `log.retention.ms` supplies `retention.ms`;
those broker keys are checked here by the same table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from strom.client.tls import SECURITY_PROTOCOLS
from strom.node.replica.read_replica import RACK_AWARE_SELECTOR, REPLICA_SELECTORS
from strom.node.security.authorizer import parse_super_users
from strom.node.topic_config import TOPIC_CONFIGS, broker_key_check

ENV_PREFIX = "STROM_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class ConfigKey:
    name: str
    type: type  # int, bool, str or list (comma-separated strings)
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None when fine


def _at_least(minimum: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= minimum else f"must be at least {minimum}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def _host_port_or_empty(value: Any) -> str | None:
    if value == "" or re.fullmatch(r"(\[[^\]]*\]|[^:]*):\d{1,5}", value):
        return None
    return "must be host:port, or empty for none"


def _principals(value: Any) -> str | None:
    try:
        parse_super_users(value)
    except ValueError as exc:
        return str(exc)
    return None


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _sasl_mechanisms(value: Any) -> str | None:
    unknown = [m for m in value if m.upper() not in SASL_MECHANISMS]
    if unknown:
        return f"unknown SASL mechanisms {unknown}; known: {', '.join(SASL_MECHANISMS)}"
    if not value:
        return "name at least one mechanism"
    return None


SECRET_KEYS = frozenset({"node.sasl.password"})  # never echoed in an error message

DAY_MS = 24 * 60 * 60 * 1000
REQUIRED = object()  # default of keys that have none

NODE_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "node.id", int, REQUIRED, "this node's id, unique in the cluster, from 1", _at_least(1)
    ),
    ConfigKey(
        "process.roles", list, ["broker", "controller"], "roles: broker, controller, or both"
    ),
    ConfigKey(
        "controller.quorum.voters",
        list,
        REQUIRED,
        "the Raft voters of the metadata quorum: id@host:port,... (controller listener addresses)",
    ),
    ConfigKey(
        "listeners",
        list,
        ["PLAINTEXT://:9092", "CONTROLLER://:9093"],
        "NAME://host:port the node binds; an empty host means all interfaces",
    ),
    ConfigKey(
        "advertised.listeners",
        list,
        [],
        "NAME://host:port clients are told to use; defaults to `listeners` (controller ones excluded)",
    ),
    ConfigKey(
        "listener.security.protocol.map",
        list,
        ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"],
        "listener name -> security protocol",
    ),
    ConfigKey(
        "controller.listener.names", list, ["CONTROLLER"], "listeners that serve the controllers"
    ),
    ConfigKey(
        "listener.wire.protocol.map",
        list,
        [],
        "listener name -> wire protocol: GRPC (strom's own) or KAFKA (Kafka's protocol, for "
        "Kafka clients and tools); unlisted listeners speak GRPC",
    ),
    ConfigKey(
        "socket.request.max.bytes",
        int,
        100 * 1024 * 1024,
        "largest request a KAFKA listener reads; a larger one closes its connection",
        _at_least(1),
    ),
    ConfigKey(
        "connections.max.idle.ms",
        int,
        600_000,
        "a KAFKA listener closes connections idle this long",
        _at_least(1),
    ),
    ConfigKey(
        "inter.broker.listener.name", str, "PLAINTEXT", "listener brokers use to reach each other"
    ),
    ConfigKey(
        "ssl.certificate.location",
        str,
        "",
        "PEM certificate chain of SSL listeners, also this node's client certificate",
    ),
    ConfigKey("ssl.key.location", str, "", "PEM private key of ssl.certificate.location"),
    ConfigKey("ssl.ca.location", str, "", "PEM CAs trusted for peers and client certificates"),
    ConfigKey(
        "ssl.client.auth",
        str,
        "none",
        "client certificates on SSL listeners: required, requested (= none in gRPC), none",
        _one_of("required", "requested", "none"),
    ),
    ConfigKey("broker.rack", str, "", "rack of this broker (placement, closest-replica reads)"),
    ConfigKey(
        "replica.selector.class",
        str,
        "",
        "which replica consumers read from (KIP-392): empty or LeaderSelector for the leader, "
        f"{RACK_AWARE_SELECTOR} for a follower in the consumer's client.rack",
        _one_of(*REPLICA_SELECTORS),
    ),
    ConfigKey("log.dirs", list, ["/tmp/strom-logs"], "data directories (the first holds metadata)"),
    ConfigKey(
        "metadata.log.dir", str, "", "where the metadata Raft log lives; default: log.dirs[0]"
    ),
    ConfigKey("num.partitions", int, 1, "partitions of auto-created topics", _at_least(1)),
    ConfigKey(
        "default.replication.factor", int, 1, "replicas of auto-created topics", _at_least(1)
    ),
    ConfigKey(
        "min.insync.replicas",
        int,
        1,
        "ISR size below which acks=all is refused",
        broker_key_check("min.insync.replicas"),
    ),
    ConfigKey("auto.create.topics.enable", bool, True, "create unknown topics on first use"),
    ConfigKey("delete.topic.enable", bool, True, "allow topics to be deleted"),
    # The keys that supply topic defaults are checked by the topic config table, so a node
    # cannot start with a default its own brokers would refuse to apply.
    ConfigKey(
        "log.retention.ms",
        int,
        7 * DAY_MS,
        "keep data this long; -1 forever",
        broker_key_check("log.retention.ms"),
    ),
    ConfigKey(
        "log.retention.bytes",
        int,
        -1,
        "keep at most this per partition; -1 unbounded",
        broker_key_check("log.retention.bytes"),
    ),
    ConfigKey(
        "log.segment.bytes",
        int,
        1 << 30,
        "roll a segment at this size",
        broker_key_check("log.segment.bytes"),
    ),
    ConfigKey(
        "log.roll.ms",
        int,
        7 * DAY_MS,
        "roll a segment at this age",
        broker_key_check("log.roll.ms"),
    ),
    ConfigKey(
        "log.index.interval.bytes",
        int,
        4096,
        "bytes between index entries",
        broker_key_check("log.index.interval.bytes"),
    ),
    ConfigKey(
        "log.retention.check.interval.ms",
        int,
        300_000,
        "how often retention runs",
        _at_least(1),
    ),
    ConfigKey(
        "log.flush.interval.messages",
        int,
        2**63 - 1,
        "fsync once this many messages are unflushed; 1: fsync before a write counts as "
        "acknowledged or replicated (grouped fsyncs)",
        broker_key_check("log.flush.interval.messages"),
    ),
    ConfigKey(
        "log.flush.interval.ms",
        int,
        2**63 - 1,
        "fsync once the oldest unflushed write is this old",
        broker_key_check("log.flush.interval.ms"),
    ),
    ConfigKey(
        "log.cleanup.policy",
        str,
        "delete",
        "delete, compact, or compact,delete (both)",
        broker_key_check("log.cleanup.policy"),
    ),
    ConfigKey(
        "log.cleaner.delete.retention.ms",
        int,
        DAY_MS,
        "keep tombstones this long",
        broker_key_check("log.cleaner.delete.retention.ms"),
    ),
    ConfigKey("log.cleaner.backoff.ms", int, 15_000, "how often the cleaner runs", _at_least(1)),
    ConfigKey(
        "message.max.bytes",
        int,
        1_048_588,
        "largest record batch a producer may send",
        broker_key_check("message.max.bytes"),
    ),
    ConfigKey("fetch.max.bytes", int, 57_671_680, "largest fetch response", _at_least(1024)),
    ConfigKey("replica.fetch.max.bytes", int, 1_048_576, "per-partition replica fetch bytes"),
    ConfigKey("replica.fetch.response.max.bytes", int, 10_485_760, "replica fetch response bytes"),
    ConfigKey("replica.fetch.wait.max.ms", int, 500, "replica fetch long-poll", _at_least(0)),
    ConfigKey(
        "follower.replication.throttled.rate",
        int,
        9_223_372_036_854_775_807,
        "bytes/s a broker fetches for replicas it is adding in a reassignment (the default: no "
        "limit)",
        _at_least(1),
    ),
    ConfigKey(
        "leader.replication.throttled.rate",
        int,
        9_223_372_036_854_775_807,
        "bytes/s a leader sends to replicas a reassignment is adding that are not in the ISR "
        "yet (the default: no limit)",
        _at_least(1),
    ),
    ConfigKey(
        "replica.lag.time.max.ms",
        int,
        30_000,
        "a follower not caught up this long leaves the ISR",
        _at_least(1),
    ),
    ConfigKey("unclean.leader.election.enable", bool, False, "elect out-of-ISR replicas"),
    ConfigKey(
        "broker.session.timeout.ms",
        int,
        9_000,
        "fence a broker that has not heartbeated this long",
        _at_least(1),
    ),
    ConfigKey("broker.heartbeat.interval.ms", int, 2_000, "broker heartbeat period", _at_least(1)),
    ConfigKey(
        "controller.quorum.election.timeout.ms",
        int,
        1_000,
        "Raft election timeout (randomized up to twice this)",
        _at_least(1),
    ),
    ConfigKey(
        "controller.quorum.tick.ms",
        int,
        100,
        "Raft tick: heartbeat period; the election timeout is counted in ticks",
        _at_least(1),
    ),
    ConfigKey(
        "controller.quorum.request.timeout.ms", int, 2_000, "Raft RPC deadline", _at_least(1)
    ),
    ConfigKey(
        "metadata.log.max.record.bytes.between.snapshots",
        int,
        20 * 1024 * 1024,
        "snapshot the metadata image after this many bytes of new records",
        _at_least(1),
    ),
    ConfigKey("request.timeout.ms", int, 30_000, "longest a produce waits for acks", _at_least(1)),
    ConfigKey(
        "offsets.topic.num.partitions", int, 50, "partitions of __consumer_offsets", _at_least(1)
    ),
    ConfigKey(
        "offsets.topic.replication.factor", int, 3, "replicas of __consumer_offsets", _at_least(1)
    ),
    ConfigKey(
        "transaction.state.log.num.partitions",
        int,
        50,
        "partitions of __transaction_state",
        _at_least(1),
    ),
    ConfigKey(
        "transaction.state.log.replication.factor",
        int,
        3,
        "replicas of __transaction_state",
        _at_least(1),
    ),
    ConfigKey(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        int,
        10_000,
        "how often the transaction coordinator aborts transactions past their timeout (and "
        "retries markers it could not write)",
        _at_least(1),
    ),
    ConfigKey(
        "offset.metadata.max.bytes",
        int,
        4096,
        "largest metadata string of one offset commit (OFFSET_METADATA_TOO_LARGE beyond)",
        _at_least(0),
    ),
    ConfigKey(
        "offsets.retention.minutes", int, 7 * 24 * 60, "keep offsets of empty groups this long"
    ),
    ConfigKey(
        "group.consumer.session.timeout.ms",
        int,
        45_000,
        "remove a group member silent this long",
        _at_least(1),
    ),
    ConfigKey(
        "group.consumer.heartbeat.interval.ms", int, 5_000, "member heartbeat period", _at_least(1)
    ),
    ConfigKey(
        "group.initial.rebalance.delay.ms",
        int,
        3_000,
        "an empty group waits this long for more members before the first assignment",
        _at_least(0),
    ),
    ConfigKey(
        "auto.leader.rebalance.enable", bool, True, "move leaders back to preferred replicas"
    ),
    ConfigKey(
        "leader.imbalance.check.interval.seconds",
        int,
        300,
        "how often preferred leaders are checked",
        _at_least(1),
    ),
    ConfigKey("controlled.shutdown.enable", bool, True, "move leaderships away before stopping"),
    ConfigKey(
        "log.level", str, "INFO", "root log level", _one_of("DEBUG", "INFO", "WARNING", "ERROR")
    ),
    ConfigKey("log.format", str, "text", "text or json log lines", _one_of("text", "json")),
    # Security (node/security/). The authorizer is off by default for local development.
    ConfigKey("authorizer.enabled", bool, False, "check every RPC against the ACLs"),
    ConfigKey(
        "super.users",
        str,
        "",
        "principals allowed everything: User:admin;User:node (or a comma list)",
        _principals,
    ),
    ConfigKey(
        "allow.everyone.if.no.acl.found",
        bool,
        False,
        "a resource no ACL names is open to everyone (Kafka's default: closed)",
    ),
    ConfigKey(
        "node.sasl.username",
        str,
        "",
        "this node's SASL user for its calls to SASL listeners of other nodes; every SASL "
        "listener also accepts it (so nodes can talk before any user exists)",
    ),
    ConfigKey("node.sasl.password", str, "", "the password of node.sasl.username (a secret)"),
    ConfigKey(
        "controller.allowed.principals",
        str,
        "",
        "the nodes' principals: only they may call the controller listeners (Raft, controller "
        "RPCs), authorizer or not, where those listeners authenticate callers (SASL, or SSL with "
        "ssl.client.auth=required); User:node-* matches by prefix. Empty: super.users and "
        "User:<node.sasl.username>",
        _principals,
    ),
    ConfigKey(
        "sasl.enabled.mechanisms",
        list,
        list(SASL_MECHANISMS),
        "what SASL_* Kafka listeners offer in SaslHandshake: PLAIN, SCRAM-SHA-256, "
        "SCRAM-SHA-512 (per listener: listener.name.<name>.sasl.enabled.mechanisms); gRPC "
        "listeners take PLAIN-like call credentials only",
        _sasl_mechanisms,
    ),
    ConfigKey(
        "connection.failed.authentication.delay.ms",
        int,
        100,
        "a failed login is answered only after this delay, slowing password guessing "
        "(Kafka's name and default)",
        _at_least(0),
    ),
    ConfigKey(
        "admin.listener",
        str,
        "",
        "host:port of the admin HTTP listener (/metrics, /healthz, /readyz); empty: off",
        _host_port_or_empty,
    ),
)

NODE_KEYS_BY_NAME: dict[str, ConfigKey] = {key.name: key for key in NODE_KEYS}

# Keys a listener may override as `listener.name.<name>.<key>`.
LISTENER_KEYS = frozenset(
    {
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.ca.location",
        "ssl.client.auth",
        "sasl.enabled.mechanisms",
    }
)
_LISTENER_KEY = re.compile(r"^listener\.name\.(?P<listener>[a-z_][a-z0-9_]*)\.(?P<key>.+)$")


def listener_key(listener: str, key: str) -> str:
    """`listener.name.<listener>.<key>`: the per-listener form of `key`."""
    return f"listener.name.{listener.lower()}.{key}"


def _split_listener_key(name: str) -> tuple[str, str] | None:
    """(LISTENER, base key) of a per-listener key, or None when `name` is not one."""
    match = _LISTENER_KEY.match(name)
    if match is None or match["key"] not in LISTENER_KEYS:
        return None
    return match["listener"].upper(), match["key"]


def parse_value(name: str, expected: type, raw: Any) -> Any:
    """Convert a YAML or environment value to `expected`, or raise ConfigError naming `name`."""
    if expected is list:
        if isinstance(raw, str):
            return [item.strip() for item in raw.split(",") if item.strip()]
        if isinstance(raw, list) and all(isinstance(item, str | int) for item in raw):
            return [str(item).strip() for item in raw]
        raise ConfigError(f"{name}: expected a comma-separated list, got {raw!r}")
    if expected is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    if expected is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str) and re.fullmatch(r"\s*-?\d+\s*", raw):
            return int(raw)
        raise ConfigError(f"{name}: expected an integer, got {raw!r}")
    if isinstance(raw, str | int | float) and not isinstance(raw, bool):
        return str(raw)
    raise ConfigError(f"{name}: expected a string, got {raw!r}")


def check_value(key: ConfigKey, raw: Any) -> Any:
    """The typed value of `raw` for `key`, or ConfigError naming the key."""
    return _checked(key, raw)


def _checked(key: ConfigKey, raw: Any) -> Any:
    if key.name in SECRET_KEYS and not isinstance(raw, str | int):
        raise ConfigError(f"{key.name}: expected a string")
    value = parse_value(key.name, key.type, raw)
    if key.check is not None:
        problem = key.check(value)
        if problem:
            raise ConfigError(f"{key.name}: {problem} (got {value!r})")
    return value


@dataclass(frozen=True, slots=True)
class Endpoint:
    listener: str
    host: str
    port: int

    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Voter:
    node_id: int
    host: str
    port: int

    def address(self) -> str:
        return f"{self.host}:{self.port}"


_LISTENER = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)://(?P<host>\[[^\]]*\]|[^:]*):(?P<port>\d+)$"
)
_VOTER = re.compile(r"^(?P<id>\d+)@(?P<host>\[[^\]]*\]|[^:]+):(?P<port>\d+)$")


def parse_listener(key: str, text: str) -> Endpoint:
    match = _LISTENER.match(text)
    if not match or not 0 <= int(match["port"]) <= 65535:
        raise ConfigError(f"{key}: {text!r} is not NAME://host:port")
    return Endpoint(match["name"].upper(), match["host"], int(match["port"]))


def parse_voter(text: str) -> Voter:
    match = _VOTER.match(text)
    if not match:
        raise ConfigError(f"controller.quorum.voters: {text!r} is not id@host:port")
    return Voter(int(match["id"]), match["host"], int(match["port"]))


class NodeConfig:
    """A node's validated configuration. `config["log.retention.ms"]` reads any key; the
    properties below are the parsed forms the node uses most."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        # Dynamic broker configs from the metadata log (node/dynamic_config.py), over the file.
        self._dynamic: dict[str, Any] = {}
        self._own_dynamic: frozenset[str] = frozenset()

    def __getitem__(self, name: str) -> Any:
        if name in self._dynamic:
            return self._dynamic[name]
        return self._values[name]

    def values(self) -> dict[str, Any]:
        return {**self._values, **self._dynamic}

    def static(self, name: str) -> Any:
        """The value from the node's file, environment or default, ignoring dynamic ones."""
        return self._values[name]

    def set_dynamic(self, values: Mapping[str, Any], own: set[str]) -> set[str]:
        """Take the dynamic values now in force (`own`: set for this broker rather than as the
        default of every broker); returns the keys whose value changed."""
        changed = {
            name
            for name in set(values) | set(self._dynamic)
            if values.get(name, self._values[name]) != self[name]
        }
        self._dynamic = dict(values)
        self._own_dynamic = frozenset(own)
        return changed

    def dynamic_source(self, name: str) -> str | None:
        """Where a dynamic value comes from: "broker" (set for this broker), "default" (for
        every broker); None when the value is static."""
        if name not in self._dynamic:
            return None
        return "broker" if name in self._own_dynamic else "default"

    @property
    def node_id(self) -> int:
        node_id: int = self._values["node.id"]
        return node_id

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self._values["process.roles"])

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles

    @property
    def is_broker(self) -> bool:
        return "broker" in self.roles

    @property
    def voters(self) -> tuple[Voter, ...]:
        return tuple(parse_voter(v) for v in self._values["controller.quorum.voters"])

    @property
    def listeners(self) -> tuple[Endpoint, ...]:
        return tuple(parse_listener("listeners", v) for v in self._values["listeners"])

    @property
    def advertised_listeners(self) -> tuple[Endpoint, ...]:
        """What clients and peers are told; defaults to the bound broker listeners."""
        raw = self._values["advertised.listeners"]
        if raw:
            return tuple(parse_listener("advertised.listeners", v) for v in raw)
        controller_names = set(self.controller_listener_names)
        return tuple(
            Endpoint(e.listener, e.host or "localhost", e.port)
            for e in self.listeners
            if e.listener not in controller_names
        )

    @property
    def controller_listener_names(self) -> tuple[str, ...]:
        return tuple(n.upper() for n in self._values["controller.listener.names"])

    @property
    def inter_broker_listener_name(self) -> str:
        name: str = self._values["inter.broker.listener.name"]
        return name.upper()

    @property
    def security_protocols(self) -> dict[str, str]:
        return {
            pair.split(":", 1)[0].upper(): pair.split(":", 1)[1].upper()
            for pair in self._values["listener.security.protocol.map"]
        }

    @property
    def wire_protocols(self) -> dict[str, str]:
        """Listener name -> GRPC or KAFKA, for every listener."""
        given = {
            pair.split(":", 1)[0].upper(): pair.split(":", 1)[1].upper()
            for pair in self._values["listener.wire.protocol.map"]
        }
        return {e.listener: given.get(e.listener, "GRPC") for e in self.listeners}

    @property
    def kafka_listener_names(self) -> tuple[str, ...]:
        return tuple(n for n, p in self.wire_protocols.items() if p == "KAFKA")

    def listener_setting(self, listener: str, key: str) -> Any:
        """`key` as `listener` sees it: its `listener.name.<name>.<key>` override, else global."""
        assert key in LISTENER_KEYS, key
        return self._values.get(listener_key(listener, key), self._values[key])

    @property
    def log_dir(self) -> Path:
        return Path(self._values["log.dirs"][0])

    @property
    def metadata_log_dir(self) -> Path:
        explicit: str = self._values["metadata.log.dir"]
        return Path(explicit) if explicit else self.log_dir

    def topic_defaults(self) -> dict[str, Any]:
        """Broker-level defaults of every topic config."""
        return {key.name: self[key.broker_key] for key in TOPIC_CONFIGS}

    def validate(self) -> None:
        """Relationships between keys; each problem names the keys involved."""
        if not self.roles or not self.roles <= {"broker", "controller"}:
            raise ConfigError(
                f"process.roles: must be broker, controller or both, got {sorted(self.roles)}"
            )
        voters = self.voters
        if not voters:
            raise ConfigError("controller.quorum.voters: at least one voter is required")
        if len({v.node_id for v in voters}) != len(voters):
            raise ConfigError("controller.quorum.voters: a node id appears twice")
        voter_ids = {v.node_id for v in voters}
        if self.is_controller and self.node_id not in voter_ids:
            raise ConfigError(
                f"controller.quorum.voters: node.id {self.node_id} has the controller role "
                "but is not a voter"
            )
        if not self.is_controller and self.node_id in voter_ids:
            raise ConfigError(
                f"process.roles: node.id {self.node_id} is a voter but lacks the controller role"
            )
        listeners = self.listeners
        names = [e.listener for e in listeners]
        if len(set(names)) != len(names):
            raise ConfigError("listeners: a listener name appears twice")
        protocols = self.security_protocols
        for name in names:
            if name not in protocols:
                raise ConfigError(
                    f"listener.security.protocol.map: no protocol for listener {name}"
                )
        self._validate_security(names)
        self._validate_wire_protocols(names)
        if self.is_controller and not set(self.controller_listener_names) & set(names):
            raise ConfigError(
                "controller.listener.names: none of "
                f"{list(self.controller_listener_names)} is in listeners {names}"
            )
        if self.is_broker and self.inter_broker_listener_name not in names:
            raise ConfigError(
                f"inter.broker.listener.name: {self.inter_broker_listener_name} is not in "
                f"listeners {names}"
            )
        _ = self.advertised_listeners  # parses, raising ConfigError naming the key
        tick_ms = self._values["controller.quorum.tick.ms"]
        if self._values["controller.quorum.election.timeout.ms"] < 2 * tick_ms:
            raise ConfigError(
                "controller.quorum.election.timeout.ms: must be at least twice "
                "controller.quorum.tick.ms (the Raft heartbeat)"
            )
        if (
            self._values["broker.session.timeout.ms"]
            <= self._values["broker.heartbeat.interval.ms"]
        ):
            raise ConfigError("broker.session.timeout.ms: must exceed broker.heartbeat.interval.ms")
        if self._values["message.max.bytes"] > self._values["fetch.max.bytes"]:
            raise ConfigError("message.max.bytes: must not exceed fetch.max.bytes")

    def _validate_security(self, names: list[str]) -> None:
        """Known security protocols; certificates for TLS listeners; credentials wherever nodes
        talk over SASL."""
        protocols = self.security_protocols
        for name, protocol in protocols.items():
            if protocol not in SECURITY_PROTOCOLS:
                raise ConfigError(
                    f"listener.security.protocol.map: {name}:{protocol} is not one of "
                    f"{', '.join(SECURITY_PROTOCOLS)}"
                )
        known = {*names, *self.controller_listener_names, self.inter_broker_listener_name}
        for key in self._values:
            split = _split_listener_key(key)
            if split is not None and split[0] not in known:
                raise ConfigError(f"{key}: no listener {split[0]} in listeners {names}")
        for name in names:
            if self.security_protocols[name] not in ("SSL", "SASL_SSL"):
                continue
            for key in ("ssl.certificate.location", "ssl.key.location"):
                if not self.listener_setting(name, key):
                    raise ConfigError(
                        f"{key}: listener {name} uses {self.security_protocols[name]} and needs "
                        f"a certificate and key (or set {listener_key(name, key)})"
                    )
            auth = self.listener_setting(name, "ssl.client.auth")
            if auth == "required" and not self.listener_setting(name, "ssl.ca.location"):
                raise ConfigError(
                    f"ssl.ca.location: listener {name} has ssl.client.auth=required and needs "
                    "the CA that signs client certificates"
                )
        if bool(self._values["node.sasl.username"]) != bool(self._values["node.sasl.password"]):
            raise ConfigError("node.sasl.username and node.sasl.password: set both or neither")
        inter_node = {*self.controller_listener_names, self.inter_broker_listener_name}
        sasl = [n for n in sorted(inter_node) if protocols.get(n, "").startswith("SASL_")]
        if sasl and not self._values["node.sasl.username"]:
            raise ConfigError(
                f"node.sasl.username: listeners {sasl} carry calls between nodes over SASL, so "
                "this node needs credentials (node.sasl.username and node.sasl.password)"
            )

    def _validate_wire_protocols(self, names: list[str]) -> None:
        for pair in self._values["listener.wire.protocol.map"]:
            name, _, protocol = pair.partition(":")
            if name.upper() not in names:
                raise ConfigError(
                    f"listener.wire.protocol.map: no listener {name.upper()} in listeners {names}"
                )
            if protocol.upper() not in ("GRPC", "KAFKA"):
                raise ConfigError(
                    f"listener.wire.protocol.map: {pair} names neither GRPC nor KAFKA"
                )
        inter_node = {*self.controller_listener_names, self.inter_broker_listener_name}
        for name in self.kafka_listener_names:
            if name in inter_node:
                raise ConfigError(
                    f"listener.wire.protocol.map: {name} carries calls between nodes, which "
                    "speak gRPC; give Kafka clients a listener of their own"
                )


def build_config(values: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Defaults, then `values` (from YAML), then `STROM_*` environment overrides."""
    for name in values:
        if name not in NODE_KEYS_BY_NAME and _split_listener_key(name) is None:
            raise ConfigError(f"unknown config key {name!r}" + _did_you_mean(name))
    resolved: dict[str, Any] = {}
    env_values = _environment_overrides(os.environ if environ is None else environ)
    per_listener = {
        name: raw for name, raw in {**values, **env_values}.items() if name not in NODE_KEYS_BY_NAME
    }
    for name, raw in per_listener.items():
        split = _split_listener_key(name)
        assert split is not None
        resolved[name] = _checked(NODE_KEYS_BY_NAME[split[1]], raw)
    for key in NODE_KEYS:
        if key.name in env_values:
            raw = env_values[key.name]
        elif key.name in values:
            raw = values[key.name]
        elif key.default is REQUIRED:
            raise ConfigError(f"{key.name}: required ({key.doc})")
        else:
            resolved[key.name] = key.default
            continue
        resolved[key.name] = _checked(key, raw)
    config = NodeConfig(resolved)
    config.validate()
    return config


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read a node's YAML file; raise ConfigError naming the key for anything wrong."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return build_config({str(k): v for k, v in data.items()}, environ)


def env_name(key: str) -> str:
    return ENV_PREFIX + re.sub(r"[.\-]", "_", key).upper()


def _environment_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    by_env = {env_name(key.name): key.name for key in NODE_KEYS}
    listener_prefix = env_name("listener.name.")
    overrides = {}
    for var, value in environ.items():
        if var in by_env:
            overrides[by_env[var]] = value
        elif var.startswith(listener_prefix):
            # STROM_LISTENER_NAME_<NAME>_<KEY>: the key is a known suffix; the rest is the name.
            rest = var[len(listener_prefix) :]
            for key in LISTENER_KEYS:
                suffix = "_" + env_name(key)[len(ENV_PREFIX) :]
                if rest.endswith(suffix) and len(rest) > len(suffix):
                    overrides[listener_key(rest[: -len(suffix)], key)] = value
    return overrides


def _did_you_mean(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, NODE_KEYS_BY_NAME, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""

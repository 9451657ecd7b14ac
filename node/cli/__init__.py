"""The `strom` command line: one module per command group, each registering its subcommands.

Server commands (`strom node run`, `strom storage format`, `strom cluster ...`) run or manage
nodes; client commands (`topics`, `produce`, `consume`, `groups`, `quorum`, `users`, `acls`,
`partitions`, `brokers`, `perf`) call `strom.client` (with SASL credentials from
$STROM_SASL_USERNAME / $STROM_SASL_PASSWORD), with Kafka's flag names where they exist and
`--output json` for scripting. Every client command reaches the cluster through
`--bootstrap-server` (default: $STROM_BOOTSTRAP_SERVER or localhost:9092) and
`--command-config FILE`, a Kafka-style properties file of connection settings (TLS:
`security.protocol`, `ssl.ca.location`, ...; strom.client.properties).

    main.py             the parser in `strom --help` order; failures as `error: ...`
    common.py           the user-facing error, connection flags and options, argument checks
    output.py           tables sized to their data, JSON
    node.py             node run|health|ready|metrics, storage format|random-uuid
    cluster.py          cluster up|status|stop|down|describe (local clusters), quorum status
    reassign.py         partitions reassign, brokers decommission|unregister, cluster rebalance
    configs.py          configs describe|alter (brokers, topics), log-dirs describe
    topics.py           topics create|list|describe|alter|delete|delete-records|elect-leaders
    produce_consume.py  the console producer and consumer
    groups.py           groups list|describe|reset-offsets|delete
    security.py         users, acls, certs create
    perf.py             perf produce|consume|end-to-end
    web_console.py      console (the web UI)
    demo.py             demo (the seed document's walkthrough)
"""

from __future__ import annotations

from strom.node.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

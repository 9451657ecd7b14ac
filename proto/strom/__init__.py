"""strom: an event streaming platform in the spirit of Apache Kafka.

Subpackages: `strom.client` (the SDK), `strom.node` (the server and the `strom` command),
`strom.raft` (the consensus core), `strom.storage` (everything on disk), `strom.v1` (wire code).
"""

__version__ = "0.1.0"

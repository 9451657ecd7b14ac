"""Node logging: one event per line, human-readable by default, JSON with `log.format=json`.

Every line carries the node id and the component (the logger name after `strom.`).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from strom.node.config import NodeConfig


class _JsonFormatter(logging.Formatter):
    def __init__(self, node_id: int) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "node": self.node_id,
            "component": record.name.removeprefix("strom."),
            "message": record.getMessage(),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event)


def configure_logging(config: NodeConfig) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if config["log.format"] == "json":
        handler.setFormatter(_JsonFormatter(config.node_id))
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)-5s [node {config.node_id}] %(name)s: %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config["log.level"])
    logging.getLogger("grpc").setLevel(logging.WARNING)

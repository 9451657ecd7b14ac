#!/bin/sh
# Container entry point: format the data directory once (idempotent), then run the node.
# Every setting comes from STROM_* variables; STROM_CLUSTER_ID is the cluster's id, shared by
# all nodes (make one with `strom storage random-uuid`).
set -eu
: "${STROM_NODE_ID:?set STROM_NODE_ID}"
: "${STROM_CLUSTER_ID:?set STROM_CLUSTER_ID (strom storage random-uuid makes one)}"
CONFIG="${STROM_CONFIG:-/etc/strom/node.yaml}"
if [ ! -f "$CONFIG" ]; then
    # Settings come from the environment; the file only has to exist.
    echo "{}" > "$CONFIG"
fi
strom storage format --cluster-id "$STROM_CLUSTER_ID" --config "$CONFIG" --ignore-formatted
exec strom node run --config "$CONFIG"

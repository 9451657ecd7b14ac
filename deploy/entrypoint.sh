#!/bin/sh
# Container entry point: format the data directory once (idempotent), then run the node.
# Every setting comes from STROM_* variables; STROM_CLUSTER_ID is the cluster's id, shared by
# all nodes (make one with `strom storage random-uuid`).
#
# In a Kubernetes StatefulSet the pods are <name>-0, <name>-1, ...: when STROM_NODE_ID is unset,
# the node id is the pod's ordinal + 1, and when STROM_PROCESS_ROLES is unset the first
# STROM_CONTROLLER_COUNT pods (default 3) are combined broker+controller nodes and the rest are
# brokers. `{ordinal}` and `{node_id}` in STROM_ADVERTISED_LISTENERS are replaced, so each pod
# can advertise its own outside address (EXTERNAL://strom-{ordinal}.example.com:9094).
set -eu

ordinal=""
case "${HOSTNAME:-}" in
    *-[0-9]*) ordinal="${HOSTNAME##*-}" ;;
esac
case "$ordinal" in
    *[!0-9]*) ordinal="" ;;
esac

if [ -z "${STROM_NODE_ID:-}" ]; then
    if [ -z "$ordinal" ]; then
        echo "set STROM_NODE_ID (or run as a StatefulSet pod named <name>-<ordinal>)" >&2
        exit 2
    fi
    STROM_NODE_ID=$((ordinal + 1))
    export STROM_NODE_ID
fi
if [ -z "${STROM_PROCESS_ROLES:-}" ] && [ -n "$ordinal" ]; then
    if [ "$ordinal" -lt "${STROM_CONTROLLER_COUNT:-3}" ]; then
        STROM_PROCESS_ROLES="broker,controller"
    else
        STROM_PROCESS_ROLES="broker"
    fi
    export STROM_PROCESS_ROLES
fi
if [ -n "${STROM_ADVERTISED_LISTENERS:-}" ]; then
    STROM_ADVERTISED_LISTENERS=$(printf '%s' "$STROM_ADVERTISED_LISTENERS" \
        | sed -e "s/{ordinal}/${ordinal}/g" -e "s/{node_id}/${STROM_NODE_ID}/g")
    export STROM_ADVERTISED_LISTENERS
fi
: "${STROM_CLUSTER_ID:?set STROM_CLUSTER_ID (strom storage random-uuid makes one)}"

# Every setting comes from the environment; the file (empty in the image) only has to exist.
CONFIG="${STROM_CONFIG:-/etc/strom/node.yaml}"
strom storage format --cluster-id "$STROM_CLUSTER_ID" --config "$CONFIG" --ignore-formatted
exec strom node run --config "$CONFIG"

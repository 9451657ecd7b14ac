"""Broker roles of a node: lifecycle with the controller and the client-facing services."""

"""Partition replicas on a broker: leader and follower state, fetchers, the replica manager."""

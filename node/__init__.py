"""The strom server: configuration, gRPC services, the Raft driver, the controller, replication,
group coordination and the `strom` command line."""

"""The metadata quorum on a node: the Raft driver around the pure core (`driver`), its gRPC
service and transport between controllers (`service`), the wire codec of Raft messages
(`codec`), and the observer through which broker-only nodes follow the committed log
(`observer`)."""

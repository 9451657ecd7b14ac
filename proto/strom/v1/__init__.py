"""Generated gRPC and protobuf code for the `strom.v1` API. Do not edit: run `make proto`."""

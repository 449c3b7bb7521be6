//! The leaf's integration tests, in one binary: a real leaf over gRPC on
//! loopback (`grpc`), and a leaf holding a lease (`leases`).

mod crash;
mod generations;
mod grpc;
mod leases;
mod shards;

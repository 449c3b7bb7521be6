//! The cache server's integration tests, in one binary.

mod server;

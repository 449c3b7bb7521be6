//! The plumbing under the query core: who serves which shard and how to
//! reach them.
//!
//! [`topology`] keeps the routing table (replicas per shard, cache
//! servers), rebuilt from lease [`membership`] (or a fixed list); each
//! replica carries its [`load`] estimate. [`leaf_client`] and
//! [`cache_client`] are the clients behind traits, so tests need no
//! sockets.
//!
//! **Invariant:** nothing here imports `crate::query` or `crate::http`.

pub mod cache_client;
pub mod leaf_client;
pub mod load;
pub mod membership;
pub mod topology;

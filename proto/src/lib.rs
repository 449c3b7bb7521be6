//! Protobuf messages and gRPC stubs shared by the servers.
//!
//! This is the only crate that knows protobuf: the others see plain Rust
//! types (prost structs and tonic clients/servers) re-exported from here,
//! plus the few encode/decode helpers below.

pub mod leaf {
    tonic::include_proto!("search.leaf.v1");
}

pub mod cache {
    tonic::include_proto!("search.cache.v1");

    impl CachedAnswer {
        /// Encodes the answer for storage in a cache server.
        pub fn encode_to_bytes(&self) -> Vec<u8> {
            prost::Message::encode_to_vec(self)
        }

        /// Decodes a stored answer; garbage is an error, never a panic.
        pub fn decode_from(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
            prost::Message::decode(bytes)
        }
    }
}

pub mod lease {
    tonic::include_proto!("search.lease.v1");
}

pub use prost::DecodeError;

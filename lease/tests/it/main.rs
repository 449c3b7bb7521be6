//! The lease crate's integration tests, in one binary: both membership
//! backends (`backends`), and holders against a real registry (`holder`).

mod backends;
mod holder;

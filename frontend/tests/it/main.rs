//! The frontend binary's integration tests, in one binary: exit codes of
//! the real binary (`exit_codes`) and the scoring contract against real leaf
//! indexes (`scoring_contract`).

mod exit_codes;
mod scoring_contract;

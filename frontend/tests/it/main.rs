//! The frontend binary's integration tests, in one binary: the embedded
//! leaf (`embedded`), exit codes of
//! the real binary (`exit_codes`) and the scoring contract against real leaf
//! indexes (`scoring_contract`).

mod embedded;
mod exit_codes;
mod scoring_contract;

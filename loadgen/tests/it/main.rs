//! The loadgen integration tests, in one binary: the library against a
//! fake search API (`run`), and the built `loadgen` binary (`cli`).

mod cli;
mod common;
mod run;

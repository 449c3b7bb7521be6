//! A leaf server: one shard (or several, `--shard 0,1,2`) of a
//! document-partitioned tantivy index, served over gRPC (`proto::leaf`),
//! honouring deadlines, cancellation and admission limits, and holding
//! leases with the frontends.
//!
//! Data flows through the modules in this order:
//! - [`corpus`] reads JSONL documents (plain or gzip) and assigns each to a
//!   shard by [`shard_of`] (xxh3-64 of the id modulo the shard count);
//!   [`builtin`] generates an npm-like corpus for demos and tests.
//! - [`index`] builds the shard's index (BM25 over `title`, boosted, and
//!   `body`) on a blocking thread, or reopens it from `--index-dir`, and
//!   gives it a generation; [`writer`] writes a shard document by document
//!   for the `indexer` crate, and [`generations`] serves the newest
//!   generation under an `--index-root`, swapping to newer ones as they
//!   appear.
//! - [`query`] holds queries parsed once and prepared per index (their
//!   block-max WAND shape, their postings count);
//!   [`search`] parses queries and runs them under a [`Budget`] (deadline,
//!   cancellation), returning an exact top-k ordered by score then id;
//!   [`stats`] provides per-shard term statistics and scoring with
//!   corpus-wide statistics, so that merged shards equal one index.
//! - [`service`] is the tonic `Leaf` service: deadline from `grpc-timeout`,
//!   [`faults`] knobs, [`limits`] admission, then the search (on the gRPC
//!   task when short, else on the blocking pool); [`metrics`] counts it all.
//! - [`server`] ties it together: [`start`] returns a [`LeafHandle`] once
//!   the index is built and the server is SERVING; [`run`] is what `main`
//!   calls. [`config`] holds [`LeafConfig`] and the command line.
//!
//! ```no_run
//! # async fn demo() -> leaf::Result<()> {
//! use leaf::{CorpusSource, LeafConfig};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let handle = leaf::start(LeafConfig::new(0, 4), CorpusSource::Builtin, listener, None, shutdown).await?;
//! handle.faults().set_delay(std::time::Duration::from_millis(50), 0.1);
//! println!("shard 0 of 4 on {} with {} documents", handle.addr(), handle.num_docs());
//! handle.stop().await;
//! # Ok(())
//! # }
//! ```

pub mod builtin;
pub mod config;
pub mod corpus;
pub mod error;
pub mod faults;
pub mod generations;
pub mod index;
pub mod limits;
pub mod metrics;
pub mod query;
pub mod search;
pub mod server;
pub mod service;
pub mod stats;
pub mod writer;

pub use builtin::{builtin_corpus, generate_corpus, sample_queries};
pub use config::{Cli, LeafConfig, LeaseConfig};
pub use corpus::{read_corpus, shard_of, CorpusRead, CorpusSource, Document};
pub use error::{LeafError, Result};
pub use faults::{FaultConfig, Faults};
pub use generations::{GenerationsConfig, Manifest};
pub use index::{BuildReport, IndexConfig, ShardIndex, DOC_STORE_CACHE_BLOCKS};
pub use limits::Limits;
pub use query::{ParsedQuery, Prepared, PREPARED_QUERIES};
pub use search::{Budget, Scored, SearchOutput, SharedWeights, MAX_K};
pub use server::{run, start, LeafHandle};
pub use service::LeafStats;
pub use stats::sum_corpus_stats;
pub use writer::ShardWriter;

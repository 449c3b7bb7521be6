//! Writing one shard's index document by document, for builders outside
//! the leaf (the `indexer` crate), with the leaf's own schema, document
//! conversion and commit payload, so that [`ShardIndex::open_generation`]
//! opens what they write.
//!
//! The writer does not decide where a generation becomes visible: the
//! indexer writes into a temporary directory and renames it into place
//! (see [`crate::generations`]).

use std::path::Path;
use std::time::Instant;

use tantivy::indexer::NoMergePolicy;
use tantivy::{Index, IndexWriter};

use crate::corpus::{shard_of, Document};
use crate::error::{LeafError, Result};
use crate::index::MIN_HEAP_PER_THREAD;
use crate::index::{reopen, schema, to_tantivy, Fields, Payload, ShardIndex, INDEX_FORMAT};

/// A tantivy writer for one shard, in a directory of its own.
pub struct ShardWriter {
    index: Index,
    writer: IndexWriter,
    fields: Fields,
    shard: u32,
    shards: u32,
    documents: u64,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("shard", &self.shard)
            .field("shards", &self.shards)
            .field("documents", &self.documents)
            .finish()
    }
}

impl ShardWriter {
    /// Creates an empty index of shard `shard` of `shards` in `dir`, which
    /// must exist and be empty. `threads` indexing threads share
    /// `heap_bytes` (raised to tantivy's minimum per thread).
    pub fn create(
        dir: &Path,
        shard: u32,
        shards: u32,
        threads: usize,
        heap_bytes: usize,
    ) -> Result<ShardWriter> {
        if shards == 0 || shard >= shards {
            return Err(LeafError::Config(format!(
                "shard {shard} is not below shard count {shards}"
            )));
        }
        let (schema, fields) = schema();
        let index = Index::create_in_dir(dir, schema)?;
        let threads = threads.clamp(1, 8);
        let heap = heap_bytes.max(threads * MIN_HEAP_PER_THREAD);
        let writer: IndexWriter = index.writer_with_num_threads(threads, heap)?;
        // As in the leaf's own build: no merging, for build speed.
        writer.set_merge_policy(Box::new(NoMergePolicy));
        Ok(ShardWriter {
            index,
            writer,
            fields,
            shard,
            shards,
            documents: 0,
        })
    }

    /// Adds one document; a document of another shard is an error (the
    /// caller routes with [`shard_of`]).
    pub fn add(&mut self, doc: &Document) -> Result<()> {
        if shard_of(&doc.id, self.shards) != self.shard {
            return Err(LeafError::Internal(format!(
                "document {:?} is not of shard {}",
                doc.id, self.shard
            )));
        }
        self.writer.add_document(to_tantivy(&self.fields, doc))?;
        self.documents += 1;
        Ok(())
    }

    /// Documents added so far.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Commits with `generation` in the payload and waits for tantivy's
    /// threads. Returns the number of documents. The files are written but
    /// not synced: syncing the directory is the publisher's job.
    pub fn commit(mut self, generation: u64, bad_lines: u64) -> Result<u64> {
        let payload = Payload {
            format: INDEX_FORMAT,
            shard: self.shard,
            shards: self.shards,
            generation,
            documents: self.documents,
            bad_lines,
        };
        let payload = serde_json::to_string(&payload)
            .map_err(|error| LeafError::Internal(format!("cannot encode payload: {error}")))?;
        let mut commit = self.writer.prepare_commit()?;
        commit.set_payload(&payload);
        commit.commit()?;
        self.writer.wait_merging_threads()?;
        drop(self.index);
        Ok(self.documents)
    }
}

impl ShardIndex {
    /// Opens a committed index in `dir` (one generation) as shard `shard` of
    /// `shards`: an index of another shard or shard count, or one that never
    /// committed, is an error.
    pub fn open_generation(dir: &Path, shard: u32, shards: u32) -> Result<ShardIndex> {
        match reopen(dir, shard, shards, Instant::now())? {
            Some(index) => Ok(index),
            None => Err(LeafError::IndexMismatch {
                dir: dir.to_path_buf(),
                reason: "the index never committed".to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::generate_corpus;

    #[test]
    fn written_shard_opens_and_searches() {
        let dir = tempfile::tempdir().unwrap();
        let docs = generate_corpus(200, 5);
        let mut writer = ShardWriter::create(dir.path(), 1, 2, 1, 0).unwrap();
        let mine: Vec<&Document> = docs.iter().filter(|d| shard_of(&d.id, 2) == 1).collect();
        for doc in &mine {
            writer.add(doc).unwrap();
        }
        let other = docs.iter().find(|d| shard_of(&d.id, 2) == 0).unwrap();
        assert!(writer.add(other).is_err());
        assert_eq!(writer.commit(42, 3).unwrap(), mine.len() as u64);

        let index = ShardIndex::open_generation(dir.path(), 1, 2).unwrap();
        assert_eq!(index.generation(), 42);
        assert_eq!(index.num_docs(), mine.len() as u64);
        assert_eq!(index.build_report().bad_lines, 3);
        let error = ShardIndex::open_generation(dir.path(), 1, 3).unwrap_err();
        assert!(matches!(error, LeafError::IndexMismatch { .. }), "{error}");
    }

    #[test]
    fn uncommitted_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(ShardWriter::create(dir.path(), 0, 1, 1, 0).unwrap());
        let error = ShardIndex::open_generation(dir.path(), 0, 1).unwrap_err();
        assert!(error.to_string().contains("never committed"), "{error}");
    }
}

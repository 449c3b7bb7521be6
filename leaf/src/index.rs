//! The shard's tantivy index: schema, building from a corpus (on the
//! caller's thread, which must be a blocking one), and reopening from
//! `--index-dir`.
//!
//! Reopen policy: a directory that holds a complete index of the same shard,
//! shard count and format is reopened as is, keeping its generation, without
//! reading the corpus. A directory of another shard or format is refused
//! with an error (pass `--rebuild` or remove it), because silently deleting
//! an operator's index is worse than failing at start. A directory whose
//! build never committed (a crash mid-build) is rebuilt.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::indexer::NoMergePolicy;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, FAST, STORED, STRING, TEXT};
use tantivy::{DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument};
use tokio_util::sync::CancellationToken;

use crate::builtin::builtin_corpus;
use crate::corpus::{for_each_document, shard_of, CorpusSource, Document};
use crate::error::{LeafError, Result};

/// Version of the schema and payload; an index of another format is not
/// reopened.
pub(crate) const INDEX_FORMAT: u32 = 1;
pub use scoring::TITLE_BOOST;
/// tantivy's minimum memory budget per indexing thread.
pub const MIN_HEAP_PER_THREAD: usize = 15_000_000;
/// How often (in documents read) the build checks the clock and the
/// shutdown token.
const BUILD_CHECK_EVERY: u64 = 1024;

/// How the index is built and where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexConfig {
    /// Keep the index on disk here and reopen it on restart; None: in RAM.
    pub dir: Option<PathBuf>,
    /// Rebuild even when `dir` holds a reusable index.
    pub rebuild: bool,
    pub writer_threads: usize,
    /// The writer's memory budget across all its threads.
    pub writer_heap_bytes: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            dir: None,
            rebuild: false,
            writer_threads: 1,
            writer_heap_bytes: 128 * 1024 * 1024,
        }
    }
}

/// What building (or reopening) did, for logs, metrics and benchmarks.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildReport {
    /// True when an existing index was reopened instead of built.
    pub reopened: bool,
    /// Documents of this shard in the index.
    pub documents: u64,
    /// Documents read from the corpus, all shards included (0 on reopen).
    pub documents_read: u64,
    pub bad_lines: u64,
    pub duration: Duration,
}

impl BuildReport {
    /// Shard documents indexed per second of build time.
    pub fn docs_per_second(&self) -> f64 {
        self.documents as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

/// The fields of the schema.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    /// Indexed raw, stored, and a fast column whose per-segment ordinals
    /// follow id order, which the top-k uses to break score ties.
    pub id: Field,
    pub title: Field,
    pub body: Field,
    pub popularity: Field,
}

/// What is written in tantivy's commit payload, so that a reopened index
/// knows what it is.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub(crate) format: u32,
    pub(crate) shard: u32,
    pub(crate) shards: u32,
    pub(crate) generation: u64,
    pub(crate) documents: u64,
    pub(crate) bad_lines: u64,
}

/// One shard's index, ready to search. Cheap to share behind an `Arc`; all
/// methods are blocking and belong on a blocking thread.
pub struct ShardIndex {
    pub(crate) shard: u32,
    pub(crate) shards: u32,
    pub(crate) generation: u64,
    /// Fingerprint of the scan order: the ids of all documents in the order
    /// searches visit them.
    pub(crate) layout: u64,
    pub(crate) fields: Fields,
    pub(crate) searcher: Searcher,
    /// Per segment of `searcher`, in its order: the documents' ids.
    pub(crate) ids: Vec<SegmentIds>,
    pub(crate) parser: QueryParser,
    /// Champion lists already computed (`TermStats`), by term and depth:
    /// another query with the same term costs no pass over its postings.
    /// Bounded by bytes ([`CHAMPION_CACHE_BYTES`]); tied to this
    /// generation, since it lives in its index.
    pub(crate) champions: ChampionCache,
    /// Queries already parsed and measured here ([`ShardIndex::prepare`]),
    /// by text; tied to this generation like the champion lists.
    pub(crate) prepared: crate::query::PreparedCache,
    /// Keeps the searcher's segments open.
    _reader: IndexReader,
    report: BuildReport,
}

/// The champion-list cache's bound per shard index, in bytes of impacts.
pub const CHAMPION_CACHE_BYTES: u64 = 16 << 20;

/// Champion lists by term and depth.
pub(crate) type ChampionCache =
    moka::sync::Cache<(tantivy::Term, usize), std::sync::Arc<Vec<proto::leaf::Impact>>>;

fn champion_cache() -> ChampionCache {
    moka::sync::Cache::builder()
        .max_capacity(CHAMPION_CACHE_BYTES)
        .weigher(
            |key: &(tantivy::Term, usize), list: &std::sync::Arc<Vec<proto::leaf::Impact>>| {
                let bytes = key.0.value().as_str().map_or(0, str::len)
                    + 64
                    + list.len() * std::mem::size_of::<proto::leaf::Impact>();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            },
        )
        .build()
}

impl std::fmt::Debug for ShardIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardIndex")
            .field("shard", &self.shard)
            .field("shards", &self.shards)
            .field("generation", &self.generation)
            .field("num_docs", &self.num_docs())
            .finish()
    }
}

impl ShardIndex {
    /// Reopens the index in `config.dir` when it is reusable, or builds it
    /// from `corpus`. Blocking; stops with [`LeafError::ShuttingDown`] when
    /// `cancel` is cancelled.
    pub fn open_or_build(
        shard: u32,
        shards: u32,
        config: &IndexConfig,
        corpus: &CorpusSource,
        cancel: &CancellationToken,
    ) -> Result<ShardIndex> {
        if shards == 0 || shard >= shards {
            return Err(LeafError::Config(format!(
                "shard {shard} is not below shard count {shards}"
            )));
        }
        let started = Instant::now();
        if let Some(dir) = &config.dir {
            if dir.join("meta.json").exists() {
                if !config.rebuild {
                    if let Some(index) = reopen(dir, shard, shards, started)? {
                        return Ok(index);
                    }
                }
                tracing::info!(dir = %dir.display(), "removing old index before rebuilding");
                std::fs::remove_dir_all(dir)?;
            }
            std::fs::create_dir_all(dir)?;
        }
        build(shard, shards, config, corpus, cancel, started)
    }

    /// Builds an in-RAM index of the documents of `shard` (tests, demos).
    pub fn build_in_ram(shard: u32, shards: u32, documents: &[Document]) -> Result<ShardIndex> {
        let config = IndexConfig {
            writer_threads: 1,
            writer_heap_bytes: MIN_HEAP_PER_THREAD,
            ..IndexConfig::default()
        };
        let corpus = CorpusSource::Documents(std::sync::Arc::new(documents.to_vec()));
        Self::open_or_build(shard, shards, &config, &corpus, &CancellationToken::new())
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Identifies this build of the index: stable across reopen, new on
    /// every rebuild.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Fingerprint of the order in which searches visit documents (equal for
    /// replicas whose documents lie in the same order).
    pub fn layout(&self) -> u64 {
        self.layout
    }

    pub fn num_docs(&self) -> u64 {
        self.searcher.num_docs()
    }

    pub fn build_report(&self) -> &BuildReport {
        &self.report
    }

    /// The tantivy searcher over the shard (benchmarks compare against
    /// tantivy's own collectors on it).
    pub fn searcher(&self) -> &Searcher {
        &self.searcher
    }

    /// The `title` and `body` fields, in that order.
    pub fn text_fields(&self) -> (Field, Field) {
        (self.fields.title, self.fields.body)
    }
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED | FAST),
        title: builder.add_text_field("title", TEXT | STORED),
        body: builder.add_text_field("body", TEXT | STORED),
        popularity: builder.add_f64_field("popularity", FAST | STORED),
    };
    (builder.build(), fields)
}

fn fields_of(schema: &Schema) -> Option<Fields> {
    Some(Fields {
        id: schema.get_field("id").ok()?,
        title: schema.get_field("title").ok()?,
        body: schema.get_field("body").ok()?,
        popularity: schema.get_field("popularity").ok()?,
    })
}

/// The generation of an index: a digest of what it holds (the format, the
/// shard, and every indexed document in order), so that replicas built from
/// the same corpus agree on it and a changed corpus changes it. The cache
/// keys answers by generation; equal content keeps entries valid.
struct GenerationDigest(xxhash_rust::xxh3::Xxh3);

impl GenerationDigest {
    fn new(shard: u32, shards: u32) -> Self {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&INDEX_FORMAT.to_le_bytes());
        hasher.update(&shard.to_le_bytes());
        hasher.update(&shards.to_le_bytes());
        GenerationDigest(hasher)
    }

    fn add(&mut self, doc: &Document) {
        for part in [&doc.id, &doc.title, &doc.body] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part.as_bytes());
        }
        self.0
            .update(&doc.popularity.map_or(u64::MAX, f64::to_bits).to_le_bytes());
    }

    /// Never 0, which stands for "unknown" in the frontend.
    fn finish(&self) -> u64 {
        self.0.digest().max(1)
    }
}

/// Reopens `dir`; None when the index there never committed.
pub(crate) fn reopen(
    dir: &Path,
    shard: u32,
    shards: u32,
    started: Instant,
) -> Result<Option<ShardIndex>> {
    let mismatch = |reason: String| LeafError::IndexMismatch {
        dir: dir.to_path_buf(),
        reason,
    };
    let index = Index::open_in_dir(dir)?;
    let metas = index.load_metas()?;
    let Some(payload) = metas.payload.as_deref() else {
        tracing::warn!(dir = %dir.display(), "index never finished building, rebuilding");
        return Ok(None);
    };
    let payload: Payload = serde_json::from_str(payload)
        .map_err(|error| mismatch(format!("unreadable payload ({error}); use --rebuild")))?;
    if payload.format != INDEX_FORMAT {
        return Err(mismatch(format!(
            "format {} instead of {INDEX_FORMAT}; use --rebuild",
            payload.format
        )));
    }
    if (payload.shard, payload.shards) != (shard, shards) {
        return Err(mismatch(format!(
            "it is shard {} of {}, not shard {shard} of {shards}; use another --index-dir or --rebuild",
            payload.shard, payload.shards
        )));
    }
    let fields = fields_of(&index.schema())
        .ok_or_else(|| mismatch("schema lacks leaf fields; use --rebuild".to_string()))?;
    let report = BuildReport {
        reopened: true,
        documents: payload.documents,
        documents_read: 0,
        bad_lines: payload.bad_lines,
        duration: started.elapsed(),
    };
    let index = finish(index, fields, shard, shards, payload.generation, report)?;
    tracing::info!(
        dir = %dir.display(),
        shard,
        shards,
        generation = index.generation,
        documents = index.num_docs(),
        seconds = index.report.duration.as_secs_f64(),
        "reopened index"
    );
    Ok(Some(index))
}

fn build(
    shard: u32,
    shards: u32,
    config: &IndexConfig,
    corpus: &CorpusSource,
    cancel: &CancellationToken,
    started: Instant,
) -> Result<ShardIndex> {
    let (schema, fields) = schema();
    let index = match &config.dir {
        Some(dir) => Index::create_in_dir(dir, schema)?,
        None => Index::create_in_ram(schema),
    };
    let threads = config.writer_threads.clamp(1, 8);
    let heap = config.writer_heap_bytes.max(threads * MIN_HEAP_PER_THREAD);
    let mut writer: IndexWriter = index.writer_with_num_threads(threads, heap)?;
    // Segments are kept as the threads write them (a handful per shard):
    // merging would slow the build down for little search gain here.
    writer.set_merge_policy(Box::new(NoMergePolicy));
    tracing::info!(shard, shards, corpus = %corpus.describe(), threads, heap, "building index");

    let mut progress = Progress::new(shard, started);
    let mut failure: Option<LeafError> = None;
    let mut digest = GenerationDigest::new(shard, shards);
    let mut add = |doc: Document| -> bool {
        progress.read += 1;
        if progress.read % BUILD_CHECK_EVERY == 0 {
            if cancel.is_cancelled() {
                failure = Some(LeafError::ShuttingDown);
                return false;
            }
            progress.maybe_log();
        }
        if shard_of(&doc.id, shards) != shard {
            return true;
        }
        digest.add(&doc);
        if let Err(error) = writer.add_document(to_tantivy(&fields, &doc)) {
            failure = Some(error.into());
            return false;
        }
        progress.indexed += 1;
        true
    };
    let bad_lines = match corpus {
        CorpusSource::File(path) => for_each_document(path, &mut add)?,
        CorpusSource::Documents(docs) => {
            let _ = docs.iter().cloned().all(&mut add);
            0
        }
        CorpusSource::Builtin => {
            let _ = builtin_corpus().into_iter().all(&mut add);
            0
        }
    };
    if let Some(error) = failure {
        return Err(error);
    }
    let (documents_read, documents) = (progress.read, progress.indexed);

    let generation = digest.finish();
    let payload = Payload {
        format: INDEX_FORMAT,
        shard,
        shards,
        generation,
        documents,
        bad_lines,
    };
    let payload = serde_json::to_string(&payload)
        .map_err(|error| LeafError::Internal(format!("cannot encode payload: {error}")))?;
    let mut commit = writer.prepare_commit()?;
    commit.set_payload(&payload);
    commit.commit()?;
    writer.wait_merging_threads()?;

    let report = BuildReport {
        reopened: false,
        documents,
        documents_read,
        bad_lines,
        duration: started.elapsed(),
    };
    tracing::info!(
        shard,
        shards,
        generation,
        documents,
        documents_read,
        bad_lines,
        seconds = report.duration.as_secs_f64(),
        docs_per_second = report.docs_per_second().round(),
        "index built"
    );
    finish(index, fields, shard, shards, generation, report)
}

/// An in-RAM index of all `documents` as shard 0 of 1, one segment per
/// chunk of `per_segment` documents (tests of multi-segment searches).
#[cfg(test)]
pub(crate) fn build_in_ram_segments(
    documents: &[Document],
    per_segment: usize,
) -> Result<ShardIndex> {
    let (schema, fields) = schema();
    let index = Index::create_in_ram(schema);
    let mut writer: IndexWriter = index.writer_with_num_threads(1, MIN_HEAP_PER_THREAD)?;
    writer.set_merge_policy(Box::new(NoMergePolicy));
    let mut digest = GenerationDigest::new(0, 1);
    for chunk in documents.chunks(per_segment.max(1)) {
        for doc in chunk {
            digest.add(doc);
            writer.add_document(to_tantivy(&fields, doc))?;
        }
        writer.commit()?;
    }
    writer.wait_merging_threads()?;
    let report = BuildReport {
        reopened: false,
        documents: documents.len() as u64,
        documents_read: documents.len() as u64,
        bad_lines: 0,
        duration: Duration::ZERO,
    };
    finish(index, fields, 0, 1, digest.finish(), report)
}

/// Decompressed doc-store blocks kept per segment (tantivy's default is
/// 100): the hits' stored fields are read from them, and each miss costs a
/// block decompression. 1,024 blocks of 16 KiB hold about 16 MiB, the whole
/// store of a 50k-document shard of the npm corpus.
pub const DOC_STORE_CACHE_BLOCKS: usize = 1024;

fn finish(
    index: Index,
    fields: Fields,
    shard: u32,
    shards: u32,
    generation: u64,
    report: BuildReport,
) -> Result<ShardIndex> {
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
        .try_into()?;
    let searcher = reader.searcher();
    let (ids, layout) = segment_ids_and_layout(&searcher)?;
    let mut parser = QueryParser::for_index(&index, vec![fields.title, fields.body]);
    parser.set_field_boost(fields.title, TITLE_BOOST);
    Ok(ShardIndex {
        shard,
        shards,
        generation,
        layout,
        fields,
        searcher,
        ids,
        parser,
        champions: champion_cache(),
        prepared: crate::query::prepared_cache(),
        _reader: reader,
        report,
    })
}

/// Each segment's ids in memory, built once at open. Reading an id through
/// the `id` fast column's zstd-compressed sstable dictionary
/// (`StrColumn::ord_to_str`) builds a zstd context per lookup, the largest
/// cost of a search for 10 hits (issue 17); here it is a slice. About
/// 8 bytes plus the id's length per document.
#[derive(Debug, Default)]
pub(crate) struct SegmentIds {
    /// Per doc id: its id's ordinal in the segment's sorted id dictionary
    /// ([`NO_ORD`] for a document without one), which the top-k compares
    /// to break score ties.
    ords: Vec<u32>,
    /// The dictionary's ids, concatenated in ordinal order.
    text: String,
    /// Where each ordinal's id ends in `text`.
    ends: Vec<u32>,
}

/// The ordinal of a document without an id: after all others.
pub(crate) const NO_ORD: u64 = u64::MAX;

impl SegmentIds {
    /// `doc`'s id ordinal (ordered like the ids).
    #[inline]
    pub(crate) fn ord(&self, doc: DocId) -> u64 {
        match self.ords.get(doc as usize) {
            Some(&ord) if ord != u32::MAX => u64::from(ord),
            _ => NO_ORD,
        }
    }

    /// The id of ordinal `ord` ("" for [`NO_ORD`]).
    pub(crate) fn id(&self, ord: u64) -> &str {
        let Ok(ord) = usize::try_from(ord) else {
            return "";
        };
        let Some(&end) = self.ends.get(ord) else {
            return "";
        };
        let start = if ord == 0 { 0 } else { self.ends[ord - 1] };
        &self.text[start as usize..end as usize]
    }
}

/// Reads every segment's ids ([`SegmentIds`]) and the layout: a digest of
/// the ids of all documents in scan order (segments in the searcher's order,
/// doc ids within them), deleted ones included: they hold positions too.
/// Per segment: its ids in dictionary order (one streaming pass), then each
/// document's ordinal in that dictionary. The layout is never 0, which
/// means "unknown" on the wire.
fn segment_ids_and_layout(searcher: &Searcher) -> Result<(Vec<SegmentIds>, u64)> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut segments = Vec::with_capacity(searcher.segment_readers().len());
    for reader in searcher.segment_readers() {
        let ids = reader
            .fast_fields()
            .str("id")?
            .ok_or_else(|| LeafError::Internal("id fast column missing".to_string()))?;
        hasher.update(&reader.max_doc().to_le_bytes());
        let mut table = SegmentIds::default();
        let mut dictionary = ids.dictionary().stream()?;
        while dictionary.advance() {
            let key = dictionary.key();
            hasher.update(&(key.len() as u64).to_le_bytes());
            hasher.update(key);
            let key = std::str::from_utf8(key)
                .map_err(|_| LeafError::Internal("id that is not UTF-8".to_string()))?;
            table.text.push_str(key);
            let end = u32::try_from(table.text.len())
                .map_err(|_| LeafError::Internal("ids of a segment over 4 GiB".to_string()))?;
            table.ends.push(end);
        }
        table.ords.reserve(reader.max_doc() as usize);
        for doc in 0..reader.max_doc() {
            let ord = ids.term_ords(doc).next().unwrap_or(NO_ORD);
            hasher.update(&ord.to_le_bytes());
            table.ords.push(u32::try_from(ord).unwrap_or(u32::MAX));
        }
        table.text.shrink_to_fit();
        segments.push(table);
    }
    Ok((segments, hasher.digest().max(1)))
}

pub(crate) fn to_tantivy(fields: &Fields, doc: &Document) -> TantivyDocument {
    let mut out = TantivyDocument::new();
    out.add_text(fields.id, &doc.id);
    out.add_text(fields.title, &doc.title);
    out.add_text(fields.body, &doc.body);
    if let Some(popularity) = doc.popularity.filter(|p| p.is_finite()) {
        out.add_f64(fields.popularity, popularity);
    }
    out
}

/// Build progress, logged about once a second.
struct Progress {
    shard: u32,
    started: Instant,
    last_log: Instant,
    read: u64,
    indexed: u64,
}

impl Progress {
    fn new(shard: u32, started: Instant) -> Progress {
        Progress {
            shard,
            started,
            last_log: started,
            read: 0,
            indexed: 0,
        }
    }

    fn maybe_log(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_log) < Duration::from_secs(1) {
            return;
        }
        self.last_log = now;
        let seconds = now.duration_since(self.started).as_secs_f64().max(1e-9);
        tracing::info!(
            shard = self.shard,
            documents_read = self.read,
            documents_indexed = self.indexed,
            docs_per_second = (self.indexed as f64 / seconds).round(),
            "building index"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::builtin::generate_corpus;

    fn on_disk(dir: &Path) -> IndexConfig {
        IndexConfig {
            dir: Some(dir.to_path_buf()),
            writer_threads: 1,
            writer_heap_bytes: MIN_HEAP_PER_THREAD,
            ..IndexConfig::default()
        }
    }

    #[test]
    fn builds_only_the_documents_of_its_shard() {
        let docs = generate_corpus(600, 1);
        let mut total = 0;
        for shard in 0..3 {
            let index = ShardIndex::build_in_ram(shard, 3, &docs).unwrap();
            let expected = docs.iter().filter(|d| shard_of(&d.id, 3) == shard).count();
            assert_eq!(index.num_docs(), expected as u64);
            assert_eq!(index.build_report().documents_read, 600);
            total += index.num_docs();
        }
        assert_eq!(total, 600);
    }

    #[test]
    fn reopens_from_index_dir_keeping_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard0");
        let docs = Arc::new(generate_corpus(300, 2));
        let corpus = CorpusSource::Documents(docs);
        let token = CancellationToken::new();
        let first = ShardIndex::open_or_build(0, 2, &on_disk(&path), &corpus, &token).unwrap();
        assert!(!first.build_report().reopened);

        // Reopening does not need the corpus at all.
        let missing = CorpusSource::File(dir.path().join("missing.jsonl"));
        let again = ShardIndex::open_or_build(0, 2, &on_disk(&path), &missing, &token).unwrap();
        assert!(again.build_report().reopened);
        assert_eq!(again.generation(), first.generation());
        assert_eq!(again.num_docs(), first.num_docs());
        drop(again);

        // Another shard is refused with a clear error.
        let error = ShardIndex::open_or_build(1, 2, &on_disk(&path), &corpus, &token).unwrap_err();
        assert!(matches!(error, LeafError::IndexMismatch { .. }), "{error}");
        assert!(error.to_string().contains("shard 0 of 2"), "{error}");

        // --rebuild builds anew; the same documents give the same generation.
        let rebuild = IndexConfig {
            rebuild: true,
            ..on_disk(&path)
        };
        let rebuilt = ShardIndex::open_or_build(0, 2, &rebuild, &corpus, &token).unwrap();
        assert!(!rebuilt.build_report().reopened);
        assert_eq!(rebuilt.generation(), first.generation());
        assert_eq!(rebuilt.num_docs(), first.num_docs());
        drop(rebuilt);

        // Changed documents give a new generation.
        let mut changed = generate_corpus(300, 2);
        for doc in &mut changed {
            doc.body.push_str(" revised");
        }
        let changed = CorpusSource::Documents(Arc::new(changed));
        let revised = ShardIndex::open_or_build(0, 2, &rebuild, &changed, &token).unwrap();
        assert_ne!(revised.generation(), first.generation());
    }

    #[test]
    fn an_unfinished_build_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (schema, _) = schema();
        // What a crash right after creating the index leaves behind.
        drop(Index::create_in_dir(dir.path(), schema).unwrap());
        let corpus = CorpusSource::Documents(Arc::new(generate_corpus(50, 3)));
        let index = ShardIndex::open_or_build(
            0,
            1,
            &on_disk(dir.path()),
            &corpus,
            &CancellationToken::new(),
        )
        .unwrap();
        assert!(!index.build_report().reopened);
        assert_eq!(index.num_docs(), 50);
    }

    #[test]
    fn cancelled_build_stops() {
        let corpus = CorpusSource::Documents(Arc::new(generate_corpus(3000, 4)));
        let token = CancellationToken::new();
        token.cancel();
        let config = IndexConfig {
            writer_threads: 1,
            writer_heap_bytes: MIN_HEAP_PER_THREAD,
            ..IndexConfig::default()
        };
        let error = ShardIndex::open_or_build(0, 1, &config, &corpus, &token).unwrap_err();
        assert!(matches!(error, LeafError::ShuttingDown));
    }

    #[test]
    fn bad_shard_is_a_config_error() {
        let error = ShardIndex::build_in_ram(2, 2, &[]).unwrap_err();
        assert!(matches!(error, LeafError::Config(_)));
    }

    #[test]
    fn replicas_of_one_shard_agree_on_the_generation() {
        let docs = generate_corpus(200, 9);
        let a = ShardIndex::build_in_ram(1, 2, &docs).unwrap();
        let b = ShardIndex::build_in_ram(1, 2, &docs).unwrap();
        let other = ShardIndex::build_in_ram(0, 2, &docs).unwrap();
        assert_eq!(a.generation(), b.generation());
        assert_ne!(a.generation(), other.generation());
    }
}

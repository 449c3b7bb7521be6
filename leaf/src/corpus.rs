//! The corpus: JSONL documents (`id`, `title`, `body`, optional
//! `popularity`), plain or gzip, split into shards by a stable hash of the id.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{LeafError, Result};

/// One document of the corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: String,
    /// Any JSON number; stored as a fast field, not used for ranking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity: Option<f64>,
}

/// Where a leaf takes its documents from.
#[derive(Clone, Debug)]
pub enum CorpusSource {
    /// A JSONL file, gzip-compressed or not (detected by magic bytes).
    File(PathBuf),
    /// Documents already in memory (tests, demos). All of them are offered;
    /// the leaf keeps those of its shard.
    Documents(Arc<Vec<Document>>),
    /// The generated corpus of [`crate::builtin_corpus`].
    Builtin,
}

impl CorpusSource {
    /// `builtin` selects the generated corpus; anything else is a path.
    pub fn from_arg(arg: &str) -> CorpusSource {
        if arg == "builtin" {
            CorpusSource::Builtin
        } else {
            CorpusSource::File(PathBuf::from(arg))
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            CorpusSource::File(path) => path.display().to_string(),
            CorpusSource::Documents(docs) => format!("{} in-memory documents", docs.len()),
            CorpusSource::Builtin => "builtin".to_string(),
        }
    }
}

/// The shard a document id belongs to: xxh3-64 of the id bytes modulo
/// `shards`. Stable across processes, platforms and versions.
pub fn shard_of(id: &str, shards: u32) -> u32 {
    let shards = u64::from(shards.max(1));
    // The remainder is below `shards`, which is a u32.
    (xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % shards) as u32
}

/// A whole corpus read into memory, with the count of lines skipped.
#[derive(Clone, Debug, Default)]
pub struct CorpusRead {
    pub documents: Vec<Document>,
    /// Lines that were not a valid document (bad JSON, missing id, …).
    pub bad_lines: u64,
}

/// Reads a JSONL corpus (plain or gzip) into memory. Bad lines are counted
/// and skipped with a warning; only I/O errors fail.
pub fn read_corpus(path: impl AsRef<Path>) -> Result<CorpusRead> {
    let mut read = CorpusRead::default();
    read.bad_lines = for_each_document(path.as_ref(), |doc| {
        read.documents.push(doc);
        true
    })?;
    Ok(read)
}

/// Parses JSONL from any reader (plain text), for tests and in-memory use.
pub fn parse_jsonl(reader: impl Read) -> Result<CorpusRead> {
    let mut read = CorpusRead::default();
    read.bad_lines = parse_lines(BufReader::new(reader), Path::new("<memory>"), |doc| {
        read.documents.push(doc);
        true
    })?;
    Ok(read)
}

/// How many bad lines are logged one by one before only counting.
const BAD_LINES_LOGGED: u64 = 10;

/// Streams the documents of a corpus file to `each`, which returns false to
/// stop early. Returns the number of bad lines.
pub(crate) fn for_each_document(path: &Path, each: impl FnMut(Document) -> bool) -> Result<u64> {
    let corpus_error = |error| LeafError::Corpus {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(corpus_error)?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf().map_err(corpus_error)?;
    let gzip = head.starts_with(&[0x1f, 0x8b])
        || path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("gz"));
    if gzip {
        let decoder = flate2::bufread::MultiGzDecoder::new(reader);
        parse_lines(BufReader::with_capacity(1 << 16, decoder), path, each)
    } else {
        parse_lines(reader, path, each)
    }
}

fn parse_lines(
    mut reader: impl BufRead,
    path: &Path,
    mut each: impl FnMut(Document) -> bool,
) -> Result<u64> {
    let mut line = Vec::new();
    let mut line_number = 0u64;
    let mut bad_lines = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|error| LeafError::Corpus {
                path: path.to_path_buf(),
                error,
            })?;
        if read == 0 {
            break;
        }
        line_number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(&line) {
            Ok(doc) => {
                if !each(doc) {
                    break;
                }
            }
            Err(reason) => {
                bad_lines += 1;
                if bad_lines <= BAD_LINES_LOGGED {
                    tracing::warn!(path = %path.display(), line = line_number, %reason, "skipping bad corpus line");
                }
            }
        }
    }
    if bad_lines > 0 {
        tracing::warn!(path = %path.display(), bad_lines, "corpus had bad lines, skipped");
    }
    Ok(bad_lines)
}

fn parse_line(line: &[u8]) -> std::result::Result<Document, String> {
    let doc: Document = serde_json::from_slice(line).map_err(|error| error.to_string())?;
    if doc.id.trim().is_empty() {
        return Err("empty id".to_string());
    }
    if doc.title.is_empty() && doc.body.is_empty() {
        return Err("no title and no body".to_string());
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const SAMPLE: &str = r#"{"id": "a", "title": "fast-json-parser", "body": "A fast JSON parser", "popularity": 10}
not json at all
{"id": "", "title": "empty id", "body": "x"}
{"title": "no id", "body": "x"}

{"id": "b", "title": "http-server", "body": "An HTTP server", "extra": [1, 2]}
{"id": "c", "title": "only title"}
{"id": "d", "popularity": 1.5}
{"id": "e", "title": "x", "body": "y", "popularity": "high"}
"#;

    #[test]
    fn parses_and_counts_bad_lines() {
        let read = parse_jsonl(SAMPLE.as_bytes()).unwrap();
        let ids: Vec<&str> = read.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(read.documents[0].popularity, Some(10.0));
        assert_eq!(read.documents[1].popularity, None);
        // Not JSON, empty id, missing id, no text, popularity not a number.
        assert_eq!(read.bad_lines, 5);
    }

    #[test]
    fn reads_plain_and_gzip_files() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("corpus.jsonl");
        std::fs::write(&plain, SAMPLE).unwrap();
        // Gzip detected by magic bytes even without the extension.
        let gz = dir.path().join("corpus.data");
        let mut encoder =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), Default::default());
        encoder.write_all(SAMPLE.as_bytes()).unwrap();
        encoder.finish().unwrap();
        for path in [&plain, &gz] {
            let read = read_corpus(path).unwrap();
            assert_eq!(read.documents.len(), 3, "{}", path.display());
            assert_eq!(read.bad_lines, 5);
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let error = read_corpus("/nonexistent/corpus.jsonl").unwrap_err();
        assert!(error.to_string().contains("cannot read corpus"), "{error}");
    }

    #[test]
    fn truncated_gzip_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("corpus.jsonl.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
        encoder.write_all(SAMPLE.repeat(50).as_bytes()).unwrap();
        let bytes = encoder.finish().unwrap();
        std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_corpus(&gz).is_err());
    }

    #[test]
    fn shard_of_is_stable() {
        // Pinned values: changing the hash would reshuffle every index.
        assert_eq!(shard_of("fast-json-parser", 1), 0);
        let pinned: Vec<u32> = ["a", "b", "react", "express", "lodash"]
            .iter()
            .map(|id| shard_of(id, 7))
            .collect();
        let again: Vec<u32> = ["a", "b", "react", "express", "lodash"]
            .iter()
            .map(|id| (xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % 7) as u32)
            .collect();
        assert_eq!(pinned, again);
        assert_eq!(pinned, PINNED_SHARDS_OF_7);
        // Zero shards is treated as one rather than dividing by zero.
        assert_eq!(shard_of("a", 0), 0);
    }

    /// `shard_of(id, 7)` for a, b, react, express, lodash.
    const PINNED_SHARDS_OF_7: [u32; 5] = [1, 4, 2, 3, 3];

    #[test]
    fn shard_of_spreads_ids() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("package-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}

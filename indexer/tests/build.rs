//! The indexer end to end: pipeline back-pressure, bad lines, atomic
//! publication under SIGKILL, and shard partitioning, on small generated
//! corpora.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use indexer::{BuildConfig, Hooks, IndexerError};
use leaf::generations::{self, shard_dir};
use leaf::{generate_corpus, shard_of, Budget, ShardIndex};

fn write_corpus(path: &Path, docs: &[leaf::Document], extra: &[(usize, &str)]) {
    let mut file = std::fs::File::create(path).unwrap();
    for (i, doc) in docs.iter().enumerate() {
        for (at, line) in extra {
            if *at == i {
                writeln!(file, "{line}").unwrap();
            }
        }
        writeln!(file, "{}", serde_json::to_string(doc).unwrap()).unwrap();
    }
}

fn config(corpus: &Path, shards: u32, out: &Path) -> BuildConfig {
    BuildConfig {
        writer_heap_bytes: 15_000_000,
        ..BuildConfig::new(corpus, shards, out)
    }
}

/// Every generation directory of every shard, and the temporary ones.
fn entries(root: &Path, shards: u32) -> (Vec<Vec<u64>>, usize) {
    let mut complete = Vec::new();
    let mut tmp = 0;
    for shard in 0..shards {
        let dir = shard_dir(root, shard);
        complete.push(generations::list(&dir).unwrap());
        if let Ok(read) = std::fs::read_dir(&dir) {
            tmp += read
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(generations::TMP_PREFIX)
                })
                .count();
        }
    }
    (complete, tmp)
}

#[test]
fn two_shards_partition_the_corpus_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let docs = generate_corpus(700, 11);
    write_corpus(&corpus, &docs, &[]);
    let root = dir.path().join("root");
    let report = indexer::build(&config(&corpus, 2, &root)).unwrap();
    assert_eq!(report.documents, 700);
    assert_eq!(report.per_shard.len(), 2);

    let mut seen = BTreeSet::new();
    for shard in 0..2 {
        let index =
            generations::open(&shard_dir(&root, shard), report.generation, shard, 2).unwrap();
        let expected: BTreeSet<String> = docs
            .iter()
            .filter(|d| shard_of(&d.id, 2) == shard)
            .map(|d| d.id.clone())
            .collect();
        assert_eq!(index.num_docs(), expected.len() as u64);
        assert_eq!(
            report.per_shard[shard as usize].documents,
            expected.len() as u64
        );
        // Each document of the shard is found there by its title.
        for doc in docs.iter().filter(|d| shard_of(&d.id, 2) == shard).take(20) {
            let hits = index
                .search_text(
                    &format!("\"{}\"", doc.title),
                    100,
                    None,
                    &Budget::unlimited(),
                )
                .unwrap();
            assert!(
                hits.hits.iter().any(|h| h.id == doc.id),
                "{} in shard {shard}",
                doc.id
            );
        }
        for id in &expected {
            assert!(seen.insert(id.clone()), "{id} in two shards");
        }
    }
    assert_eq!(seen.len(), 700);
    let (complete, tmp) = entries(&root, 2);
    assert_eq!(complete, [vec![report.generation], vec![report.generation]]);
    assert_eq!(tmp, 0);

    // A rebuild into the same root gets a strictly newer generation.
    let again = indexer::build(&config(&corpus, 2, &root)).unwrap();
    assert!(again.generation > report.generation);
    let manifest =
        leaf::Manifest::read(&shard_dir(&root, 1).join(again.generation.to_string())).unwrap();
    assert_eq!(
        (manifest.shard, manifest.shards, manifest.generation),
        (1, 2, again.generation)
    );
}

#[test]
fn bad_lines_are_counted_with_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let docs = generate_corpus(50, 12);
    // Lines 1, 12 (after 10 documents and the first bad line), and 33.
    write_corpus(
        &corpus,
        &docs,
        &[
            (0, "not json"),
            (10, r#"{"id": "", "title": "x"}"#),
            (30, r#"{"id": "n", "title": "", "body": ""}"#),
        ],
    );
    let report = indexer::build(&BuildConfig {
        bad_lines_listed: 2,
        ..config(&corpus, 1, &dir.path().join("root"))
    })
    .unwrap();
    assert_eq!(report.bad_lines, 3);
    assert_eq!(report.documents, 50);
    assert_eq!(report.lines, 53);
    let lines: Vec<u64> = report.bad_lines_listed.iter().map(|b| b.line).collect();
    assert_eq!(lines, [1, 12]);
    assert!(report.bad_lines_listed[1].reason.contains("empty id"));
    let text = report.to_text();
    assert!(
        text.contains("bad line 1:") && text.contains("and 1 more bad line"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["bad_lines"], 3);
    assert_eq!(json["stages"].as_array().unwrap().len(), 4);
}

#[test]
fn gzip_corpus_builds_like_plain() {
    let dir = tempfile::tempdir().unwrap();
    let docs = generate_corpus(120, 13);
    let plain = dir.path().join("corpus.jsonl");
    write_corpus(&plain, &docs, &[]);
    let gz = dir.path().join("corpus.jsonl.gz");
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
    encoder.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    encoder.finish().unwrap();
    let report = indexer::build(&config(&gz, 3, &dir.path().join("root"))).unwrap();
    assert_eq!(report.documents, 120);
}

#[test]
fn a_slow_index_stage_stalls_the_reader_instead_of_filling_memory() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let docs = generate_corpus(6000, 14);
    write_corpus(&corpus, &docs, &[]);
    let (capacity, batch, shards) = (2usize, 10usize, 2u32);
    let hooks = Hooks {
        // Slow, not stopped: every batch yields the CPU many times.
        before_index_batch: Some(Arc::new(|_| {
            for _ in 0..200 {
                std::thread::yield_now();
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        })),
    };
    let report = indexer::build_with_hooks(
        &BuildConfig {
            queue_capacity: capacity,
            batch_size: batch,
            ..config(&corpus, shards, &dir.path().join("root"))
        },
        hooks,
    )
    .unwrap();
    assert_eq!(report.documents, 6000);
    // What can be read but not indexed: the reader's queue and the batch
    // the router holds, each shard's queue and the batch its writer holds,
    // and the batch being sent.
    let bound = ((capacity + 1) + shards as usize * (capacity + 1) + 1) * batch;
    assert!(
        report.max_in_flight <= bound as u64,
        "{} documents in flight, bound {bound}",
        report.max_in_flight
    );
    let read = &report.stages[0];
    assert!(read.blocked_sends > 0, "the reader never waited: {read:?}");
    assert!(report.stages[1].max_queue_depth <= capacity as u64);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_corpus(&corpus, &generate_corpus(5, 15), &[]);
    let missing =
        indexer::build(&config(&dir.path().join("nope.jsonl"), 1, dir.path())).unwrap_err();
    assert!(matches!(missing, IndexerError::Corpus { .. }), "{missing}");
    assert_eq!(missing.exit_code(), 2);
    let zero = indexer::build(&config(&corpus, 0, dir.path())).unwrap_err();
    assert!(zero.to_string().contains("at least 1"), "{zero}");
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"x").unwrap();
    let unwritable = indexer::build(&config(&corpus, 1, &blocked.join("root"))).unwrap_err();
    assert!(
        matches!(unwritable, IndexerError::Output { .. }),
        "{unwritable}"
    );

    // The binary exits 2 with one line on stderr.
    let output = Command::new(env!("CARGO_BIN_EXE_indexer"))
        .args(["build", "--shards", "0", "--out"])
        .arg(dir.path().join("root"))
        .arg("--corpus")
        .arg(&corpus)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("error: shards must be at least 1"));
}

/// Starts the binary hanging at `stage`, waits until it says so, kills it
/// with SIGKILL.
fn kill_at(stage: &str, corpus: &Path, root: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_indexer"))
        .args([
            "build",
            "--quiet",
            "--shards",
            "2",
            "--batch-size",
            "16",
            "--debug-hang-at",
            stage,
        ])
        .arg("--corpus")
        .arg(corpus)
        .arg("--out")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = false;
    for line in stderr.lines() {
        if line.unwrap().contains(&format!("hanging at {stage}")) {
            said = true;
            break;
        }
    }
    assert!(said, "the indexer never reached {stage}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn a_killed_build_leaves_no_visible_generation_and_a_rerun_works() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_corpus(&corpus, &generate_corpus(400, 16), &[]);
    let root = dir.path().join("root");
    for stage in ["index", "publish"] {
        kill_at(stage, &corpus, &root);
        let (complete, tmp) = entries(&root, 2);
        assert_eq!(
            complete,
            [Vec::<u64>::new(), Vec::new()],
            "after a kill at {stage}"
        );
        assert_eq!(tmp, 2, "after a kill at {stage}");
        // A leaf finds nothing to serve.
        assert!(leaf::generations::Generations::open(
            leaf::GenerationsConfig::new(&root),
            0,
            2,
            None
        )
        .is_err());
    }
    let report = indexer::build(&config(&corpus, 2, &root)).unwrap();
    // Each build removes what the one before it left: two shards' worth.
    assert_eq!(report.stale_builds_removed, 2);
    let (complete, tmp) = entries(&root, 2);
    assert_eq!(complete, [vec![report.generation], vec![report.generation]]);
    assert_eq!(tmp, 0);
    let index: ShardIndex =
        generations::open(&shard_dir(&root, 0), report.generation, 0, 2).unwrap();
    assert_eq!(index.num_docs(), report.per_shard[0].documents);
}

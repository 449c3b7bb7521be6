//! Atomic publication of a generation.
//!
//! Each shard is built in `ROOT/shard-<i>/.tmp-<generation>-<pid>/`; once
//! every shard has committed, each directory's files, the manifest and the
//! directory itself are synced, then renamed to `ROOT/shard-<i>/<generation>/`
//! and the shard directory is synced. A rename within one directory is
//! atomic, so a reader sees either no generation or a complete one: a build
//! killed at any point (SIGINT, SIGKILL, a full disk) leaves only `.tmp-*`
//! directories, which leaves ignore and the next build removes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use leaf::generations::{self, TMP_PREFIX};

use crate::error::{IndexerError, Result};

/// The directories one build writes.
#[derive(Debug)]
pub struct Target {
    pub root: PathBuf,
    pub generation: u64,
    /// Per shard: where it is built.
    pub tmp: Vec<PathBuf>,
    /// Per shard: where it is published.
    pub finals: Vec<PathBuf>,
    /// Stale temporary directories removed before starting.
    pub cleaned: usize,
}

impl Target {
    /// Creates the shard directories (after checking that `root` is
    /// writable), removes stale builds, picks the generation and creates the
    /// temporary directories.
    pub fn prepare(root: &Path, shards: u32) -> Result<Target> {
        std::fs::create_dir_all(root).map_err(IndexerError::output(root))?;
        let probe = root.join(format!("{TMP_PREFIX}probe-{}", std::process::id()));
        File::create(&probe).map_err(IndexerError::output(root))?;
        std::fs::remove_file(&probe).map_err(IndexerError::output(&probe))?;

        let mut cleaned = 0;
        let mut newest = 0;
        for shard in 0..shards {
            let dir = generations::shard_dir(root, shard);
            std::fs::create_dir_all(&dir).map_err(IndexerError::output(&dir))?;
            cleaned += clean_stale(&dir)?;
            if let Some(&last) = generations::list(&dir)?.last() {
                newest = newest.max(last);
            }
        }
        let generation = next_generation(newest, now_ms());
        let pid = std::process::id();
        let mut tmp = Vec::new();
        let mut finals = Vec::new();
        for shard in 0..shards {
            let dir = generations::shard_dir(root, shard);
            let building = dir.join(format!("{TMP_PREFIX}{generation}-{pid}"));
            std::fs::create_dir(&building).map_err(IndexerError::output(&building))?;
            tmp.push(building);
            finals.push(dir.join(generation.to_string()));
        }
        Ok(Target {
            root: root.to_path_buf(),
            generation,
            tmp,
            finals,
            cleaned,
        })
    }

    /// Syncs and renames every shard's directory into place.
    pub fn publish(&self) -> Result<()> {
        for (tmp, done) in self.tmp.iter().zip(&self.finals) {
            sync_dir_tree(tmp)?;
            std::fs::rename(tmp, done).map_err(IndexerError::output(done))?;
            if let Some(parent) = done.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Removes the temporary directories (after a failed build).
    pub fn abandon(&self) {
        for tmp in &self.tmp {
            if let Err(error) = std::fs::remove_dir_all(tmp) {
                tracing::warn!(dir = %tmp.display(), %error, "cannot remove temporary directory");
            }
        }
    }
}

/// The generation after `newest`: the current time in milliseconds since
/// the Unix epoch, or one more than `newest` when the clock is behind it.
pub fn next_generation(newest: u64, now_ms: u64) -> u64 {
    now_ms.max(newest.saturating_add(1)).max(1)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Removes the `.tmp-<generation>-<pid>` directories in `dir` whose build is
/// not running any more. Returns how many.
fn clean_stale(dir: &Path) -> Result<usize> {
    let mut cleaned = 0;
    for entry in std::fs::read_dir(dir).map_err(IndexerError::output(dir))? {
        let entry = entry.map_err(IndexerError::output(dir))?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else {
            continue;
        };
        let pid = rest
            .rsplit('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| pid != std::process::id() && process_alive(pid)) {
            tracing::warn!(dir = %entry.path().display(), "another build is running, leaving its directory");
            continue;
        }
        tracing::info!(dir = %entry.path().display(), "removing what an interrupted build left");
        std::fs::remove_dir_all(entry.path()).map_err(IndexerError::output(entry.path()))?;
        cleaned += 1;
    }
    Ok(cleaned)
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Syncs every file in `dir` (tantivy's directories are flat), then `dir`.
fn sync_dir_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(IndexerError::output(dir))? {
        let path = entry.map_err(IndexerError::output(dir))?.path();
        if path.is_file() {
            File::open(&path)
                .and_then(|file| file.sync_all())
                .map_err(IndexerError::output(&path))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(IndexerError::output(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_increase_strictly() {
        assert_eq!(next_generation(0, 1_000), 1_000);
        assert_eq!(next_generation(5_000, 1_000), 5_001);
        assert_eq!(next_generation(1_000, 1_000), 1_001);
        assert_eq!(next_generation(0, 0), 1);
    }

    #[test]
    fn prepare_cleans_stale_builds_and_goes_above_existing_generations() {
        let root = tempfile::tempdir().unwrap();
        let shard0 = generations::shard_dir(root.path(), 0);
        let future = now_ms() + 1_000_000;
        std::fs::create_dir_all(shard0.join(future.to_string())).unwrap();
        // A build that died: its pid is no longer running.
        std::fs::create_dir_all(shard0.join(format!("{TMP_PREFIX}5-4000000000"))).unwrap();
        let target = Target::prepare(root.path(), 2).unwrap();
        assert_eq!(target.cleaned, 1);
        assert_eq!(target.generation, future + 1);
        assert!(target.tmp.iter().all(|dir| dir.is_dir()));
        target.abandon();
        assert!(target.tmp.iter().all(|dir| !dir.exists()));
    }

    #[test]
    fn unwritable_root_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let error = Target::prepare(&file.join("root"), 1).unwrap_err();
        assert!(matches!(error, IndexerError::Output { .. }), "{error}");
    }
}

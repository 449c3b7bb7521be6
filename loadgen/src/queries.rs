//! Queries: loading them and picking the next one, by a Zipf law over their
//! order or in order.

use rand::Rng;

use crate::config::{QueryOrder, QuerySource};
use crate::error::{Error, Result};

/// Reads the queries, most popular first; blank lines are skipped.
pub(crate) fn load(source: &QuerySource) -> Result<Vec<String>> {
    let queries: Vec<String> = match source {
        QuerySource::Fixed(q) => vec![q.clone()],
        QuerySource::List(list) => list.clone(),
        QuerySource::File(path) => std::fs::read_to_string(path)
            .map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect(),
    };
    if queries.is_empty() {
        let what = match source {
            QuerySource::File(path) => format!("queries file {} has no queries", path.display()),
            _ => "the query list is empty".to_string(),
        };
        return Err(Error::usage(what));
    }
    Ok(queries)
}

/// Picks the index of the query for each request.
#[derive(Debug, Clone)]
pub(crate) enum Picker {
    Replay { len: usize },
    Zipf(Zipf),
}

impl Picker {
    pub fn new(order: QueryOrder, len: usize) -> Picker {
        match order {
            QueryOrder::Replay => Picker::Replay { len },
            QueryOrder::Zipf { exponent } => Picker::Zipf(Zipf::new(len, exponent)),
        }
    }

    /// The query index for the `seq`-th request of the run.
    pub fn pick<R: Rng>(&self, seq: u64, rng: &mut R) -> usize {
        match self {
            Picker::Replay { len } => (seq % *len as u64) as usize,
            Picker::Zipf(zipf) => zipf.sample(rng),
        }
    }
}

/// A Zipf law over ranks 1..=n: P(r) is proportional to 1/r^s. Sampling is a
/// binary search in the precomputed cumulative distribution.
#[derive(Debug, Clone)]
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, exponent: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += (rank as f64).powf(-exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// A 0-based rank: 0 is the most popular.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.random();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn zipf_frequencies_follow_the_law() {
        let zipf = Zipf::new(100, 1.0);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 100];
        let draws = 200_000;
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        let harmonic: f64 = (1..=100).map(|r| 1.0 / r as f64).sum();
        for rank in [1usize, 2, 10, 100] {
            let expected = draws as f64 / (rank as f64 * harmonic);
            let got = f64::from(counts[rank - 1]);
            assert!(
                (got - expected).abs() < 0.1 * expected + 30.0,
                "rank {rank}: {got} vs {expected}"
            );
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
    }

    #[test]
    fn zipf_zero_is_uniform_and_one_query_always_wins() {
        let mut rng = StdRng::seed_from_u64(1);
        let zipf = Zipf::new(4, 0.0);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        let single = Zipf::new(1, 1.5);
        assert!((0..100).all(|_| single.sample(&mut rng) == 0));
    }

    #[test]
    fn replay_goes_in_order_and_wraps() {
        let picker = Picker::new(QueryOrder::Replay, 3);
        let mut rng = StdRng::seed_from_u64(1);
        let picks: Vec<usize> = (0..7).map(|i| picker.pick(i, &mut rng)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn empty_files_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.txt");
        std::fs::write(&path, "\n  \n").unwrap();
        let err = load(&QuerySource::File(path.clone())).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("has no queries"));
        std::fs::write(&path, "first\n\n second \n").unwrap();
        assert_eq!(load(&QuerySource::File(path)).unwrap(), ["first", "second"]);
    }
}

//! Scratch experiment (to be deleted): compares share estimators.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use frontend::fanout::{ShardOutcome, ShardResult};
use frontend::merge;
use frontend::quality::estimated_recall;
use frontend::stats::QueryStats;
use leaf::{Budget, ShardIndex};
use proto::leaf::CorpusStats;

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn shares(parts: &[CorpusStats], k: usize) -> Vec<(&'static str, Option<Vec<f64>>)> {
    let n = parts.len();
    let mut per: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for (s, p) in parts.iter().enumerate() {
        for t in &p.terms {
            per.entry((t.field.clone(), t.term.clone()))
                .or_insert_with(|| vec![0; n])[s] = t.doc_freq;
        }
    }
    let total_docs: u64 = parts.iter().map(|p| p.num_docs).sum();
    let norm = |v: Vec<f64>| {
        let s: f64 = v.iter().sum();
        if s <= 0.0 {
            None
        } else {
            Some(v.iter().map(|x| x / s).collect::<Vec<_>>())
        }
    };
    let idf = |df: u64| {
        let df = df as f64;
        (1.0 + (total_docs as f64 - df + 0.5) / (df + 0.5)).ln()
    };
    let boost = |field: &str| if field == "title" { 2.0 } else { 1.0 };
    let pairs: Vec<(f64, u64, &Vec<u64>)> = per
        .iter()
        .map(|((f, _), v)| {
            let df: u64 = v.iter().sum();
            (boost(f) * idf(df), df, v)
        })
        .filter(|(_, df, _)| *df > 0)
        .collect();
    let mut out = Vec::new();
    // max df
    let mut m = vec![0f64; n];
    for (_, _, v) in &pairs {
        for s in 0..n {
            m[s] = m[s].max(v[s] as f64);
        }
    }
    out.push(("maxdf", norm(m)));
    // sum df
    let mut m = vec![0f64; n];
    for (_, _, v) in &pairs {
        for s in 0..n {
            m[s] += v[s] as f64;
        }
    }
    out.push(("sumdf", norm(m)));
    // rarest pair
    let rarest = pairs.iter().min_by_key(|(_, df, _)| *df);
    out.push((
        "rarest",
        rarest.and_then(|(_, _, v)| norm(v.iter().map(|&x| x as f64).collect())),
    ));
    // greedy by weight
    for (name, use_boost, depth) in [
        ("greedy", true, 1.0),
        ("greedy_noboost", false, 1.0),
        ("greedy_d0.5", true, 0.5),
        ("greedy_d2", true, 2.0),
        ("greedy_d3", true, 3.0),
        ("greedy_d5", true, 5.0),
    ] {
        let mut sorted = pairs.clone();
        sorted.sort_by(|a, b| {
            let wa = if use_boost { a.0 } else { idf(a.1) };
            let wb = if use_boost { b.0 } else { idf(b.1) };
            wb.partial_cmp(&wa).unwrap()
        });
        let mut remaining = k as f64 * depth;
        let mut m = vec![0f64; n];
        for (_, df, v) in &sorted {
            if remaining <= 0.0 {
                break;
            }
            let take = remaining.min(*df as f64);
            for s in 0..n {
                m[s] += take * v[s] as f64 / *df as f64;
            }
            remaining -= take;
        }
        out.push((name, norm(m)));
    }
    // idf^2-weighted per-pair shares
    let mut m = vec![0f64; n];
    for (w, df, v) in &pairs {
        for s in 0..n {
            m[s] += w * w * v[s] as f64 / *df as f64;
        }
    }
    out.push(("idfw", norm(m)));
    out.push(("docs", None));
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let docs = Arc::new(leaf::read_corpus(&args[1]).unwrap().documents);
    let queries: Vec<String> = std::fs::read_to_string(&args[2])
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(args[3].parse().unwrap())
        .map(str::to_string)
        .collect();
    let nshards: u32 = 8;
    let k = 10u32;
    let shards: Vec<ShardIndex> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|w| {
                let docs = &docs;
                sc.spawn(move || {
                    (0..nshards)
                        .filter(|s| s % 2 == w)
                        .map(|s| (s, ShardIndex::build_in_ram(s, nshards, docs).unwrap()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_by_key(|(s, _)| *s);
        all.into_iter().map(|(_, i)| i).collect()
    });
    let known: Vec<u64> = shards.iter().map(|s| s.num_docs()).collect();
    eprintln!("built");
    let rates = [0.1, 0.25, 0.5];
    // name -> rate -> (sum abs err, sum est, n)
    let mut acc: HashMap<&'static str, Vec<(f64, f64, f64, usize)>> = HashMap::new();
    let mut small = 0;
    let mut nq = 0;
    for (qi, q) in queries.iter().enumerate() {
        let Ok(parts) = shards
            .iter()
            .map(|s| s.term_stats(q))
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let qs = QueryStats::from_shards(&parts);
        let g = qs.stats.clone().unwrap();
        let outs: Vec<_> = shards
            .iter()
            .map(|s| s.search_text(q, k, Some(&g), &Budget::unlimited()).unwrap())
            .collect();
        let res = |s: usize, drop: bool| ShardResult {
            shard: s as u32,
            outcome: if drop {
                ShardOutcome::TimedOut
            } else {
                ShardOutcome::Answered(outs[s].clone().into_response(s as u32, 1))
            },
            hedges: 0,
            hedge_won: false,
            latency: Duration::ZERO,
        };
        let full = merge::merge(
            (0..shards.len()).map(|s| res(s, false)).collect(),
            k as usize,
            &known,
            None,
        );
        if full.hits.is_empty() {
            continue;
        }
        nq += 1;
        let total_matches: usize = outs.iter().map(|o| o.hits.len()).sum();
        if total_matches < 20 {
            small += 1;
        }
        let fullset: std::collections::HashSet<&str> =
            full.hits.iter().map(|h| h.id.as_str()).collect();
        let estimators = shares(&parts, k as usize);
        for (ri, &r) in rates.iter().enumerate() {
            let mut rng = Rng(qi as u64 * 7919 + ri as u64);
            let drops: Vec<bool> = (0..shards.len()).map(|_| rng.f() < r).collect();
            let partial = merge::merge(
                (0..shards.len()).map(|s| res(s, drops[s])).collect(),
                k as usize,
                &known,
                None,
            );
            let found = partial
                .hits
                .iter()
                .filter(|h| fullset.contains(h.id.as_str()))
                .count();
            let recall = found as f64 / fullset.len() as f64;
            for (name, share) in &estimators {
                let e = if partial.partial {
                    estimated_recall(&partial.shards, share.as_deref())
                } else {
                    1.0
                };
                let entry = acc
                    .entry(name)
                    .or_insert_with(|| vec![(0.0, 0.0, 0.0, 0); 3]);
                entry[ri].0 += (e - recall).abs();
                entry[ri].1 += e;
                entry[ri].2 += recall;
                entry[ri].3 += 1;
            }
        }
    }
    println!("queries {nq}, with < 20 matches in top-k lists: {small}");
    let mut names: Vec<_> = acc.keys().copied().collect();
    names.sort();
    for name in names {
        let v = &acc[name];
        let cells: Vec<String> = v
            .iter()
            .map(|(e, s, r, n)| {
                let n = *n as f64;
                format!("MAE {:.4} bias {:+.4}", e / n, (s - r) / n)
            })
            .collect();
        println!("{name:16} {}", cells.join(" | "));
    }
}

//! The report: every figure per stage and for the whole measured run, as a
//! serializable [`Report`], with a text summary and JSON output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::QueryOrder;
use crate::error::{EXIT_OK, EXIT_RUNTIME, EXIT_SLO_FAILED};
use crate::schedule::StagePlan;
use crate::slo::{Figures, Slo, SloResult};
use crate::stats::{Series, StageStats};

/// Everything a run measured. Latencies are in milliseconds, rates are
/// fractions (0.01 is 1%) unless a field name says percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: String,
    /// The endpoint driven, e.g. `http://127.0.0.1:8080/search`.
    pub target: String,
    /// When the schedule started, RFC 3339.
    pub started_at: String,
    pub seed: u64,
    pub queries: usize,
    pub order: QueryOrder,
    pub max_in_flight: usize,
    pub connections_opened: u64,
    /// The run was stopped before its schedule ended.
    pub interrupted: bool,
    /// The warmup (if any) first, then each stage.
    pub stages: Vec<StageReport>,
    /// All measured stages together (the warmup left out).
    pub total: StageReport,
    pub slos: Vec<SloResult>,
    pub series: SeriesReport,
}

/// The figures of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub name: String,
    pub warmup: bool,
    /// Requests per second asked for.
    pub rate: f64,
    pub duration_s: f64,
    /// Requests the schedule held.
    pub scheduled: u64,
    pub sent: u64,
    /// Sent requests that finished (all of them, unless the run was cut short).
    pub completed: u64,
    /// Scheduled requests not sent because they could not go out on time.
    pub dropped: u64,
    /// The request cap cut this stage short.
    pub truncated: bool,
    /// Sent requests per second.
    pub achieved_rate: f64,
    /// Requests answered with any HTTP response.
    pub responses: u64,
    pub ok: u64,
    /// Non-2xx responses, timeouts and connection failures.
    pub errors: u64,
    /// Errors over completed requests.
    pub error_rate: Option<f64>,
    /// Dropped over scheduled requests.
    pub drop_rate: Option<f64>,
    /// Errors keyed by HTTP status, or `timeout`, `connect`, `transport`.
    pub errors_by_status: BTreeMap<String, u64>,
    /// Error bodies' `error.code`, e.g. `overloaded`.
    pub error_codes: BTreeMap<String, u64>,
    /// From each request's scheduled time to its last response byte.
    pub latency_ms: Latency,
    /// How late requests went out compared with their schedule: the
    /// generator's own delay, included in `latency_ms`.
    pub send_lag_ms: Latency,
    /// Latency by percentile on a log scale of 1/(1-q), for plots.
    pub distribution: Vec<DistributionPoint>,
    pub answers: Answers,
    /// The latency histogram in microseconds, in HdrHistogram's compressed
    /// base64 form, readable by HdrHistogram's tools.
    pub hdr_histogram: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionPoint {
    /// 0 to 100.
    pub percentile: f64,
    pub latency_ms: f64,
}

/// What the search answers said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answers {
    /// Answers that said whether they were partial.
    pub with_partial: u64,
    pub partial: u64,
    pub partial_rate: Option<f64>,
    pub coverage_mean_percent: Option<f64>,
    pub estimated_recall_mean: Option<f64>,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub cache_bypass: u64,
    /// Hits over hits and misses.
    pub cache_hit_rate: Option<f64>,
    /// The server's own `took_ms`, averaged.
    pub took_ms_mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesReport {
    pub interval_s: f64,
    pub points: Vec<SeriesPoint>,
}

/// Requests scheduled in one interval of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Start of the interval, from the run's start.
    pub t_s: f64,
    pub completed: u64,
    pub errors: u64,
    pub dropped: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Report {
    /// Whether every SLO passed.
    pub fn passed(&self) -> bool {
        self.slos.iter().all(|s| s.pass)
    }

    /// 0 when every SLO passed, 1 when one failed, 3 when requests were sent
    /// but none got any HTTP response.
    pub fn exit_code(&self) -> u8 {
        let all: u64 = self.stages.iter().map(|s| s.completed).sum();
        let answered: u64 = self.stages.iter().map(|s| s.responses).sum();
        if all > 0 && answered == 0 {
            EXIT_RUNTIME
        } else if self.passed() {
            EXIT_OK
        } else {
            EXIT_SLO_FAILED
        }
    }

    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "target {}  queries {} ({})  seed {}  connections {}{}",
            self.target,
            self.queries,
            match self.order {
                QueryOrder::Zipf { exponent } => format!("zipf s={exponent}"),
                QueryOrder::Replay => "replay".into(),
            },
            self.seed,
            self.connections_opened,
            if self.interrupted {
                "  INTERRUPTED"
            } else {
                ""
            }
        );
        let measured = self.stages.iter().filter(|s| !s.warmup).count();
        for stage in &self.stages {
            stage_summary(&mut out, stage);
        }
        if measured > 1 {
            stage_summary(&mut out, &self.total);
        }
        if !self.slos.is_empty() {
            let _ = writeln!(out, "SLOs:");
            for r in &self.slos {
                let actual = match r.actual {
                    None => "no data".to_string(),
                    Some(v) if r.slo.contains('%') => format!("{v:.3}%"),
                    Some(v) => ms(v),
                };
                let _ = writeln!(
                    out,
                    "  {}  {:<18} {:<8} {}",
                    if r.pass { "PASS" } else { "FAIL" },
                    r.slo,
                    r.scope,
                    actual
                );
            }
        }
        out
    }
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.3}s", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v:.2}ms")
    } else {
        format!("{:.0}us", v * 1000.0)
    }
}

/// A rate as written on the command line: no decimals when whole.
pub(crate) fn rate(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

fn stage_summary(out: &mut String, s: &StageReport) {
    let title = if s.warmup {
        "warmup (not measured)".to_string()
    } else if s.name == "total" {
        "total".to_string()
    } else {
        format!("stage {}", s.name)
    };
    let _ = writeln!(
        out,
        "{title}: {} @ {}/s  scheduled {}  sent {}  dropped {}  achieved {:.1}/s{}",
        humantime::format_duration(Duration::from_secs_f64(s.duration_s)),
        rate(s.rate),
        s.scheduled,
        s.sent,
        s.dropped,
        s.achieved_rate,
        if s.truncated {
            "  (cut by --max-requests)"
        } else {
            ""
        }
    );
    let l = &s.latency_ms;
    if l.count > 0 {
        let _ = writeln!(
            out,
            "  latency  p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p99_9),
            ms(l.p99_99),
            ms(l.max)
        );
    }
    let mut errors = format!("  errors   {} ({})", s.errors, percent(s.error_rate));
    for (status, n) in &s.errors_by_status {
        let _ = write!(errors, "  {status}: {n}");
    }
    for (code, n) in &s.error_codes {
        let _ = write!(errors, "  [{code}: {n}]");
    }
    let _ = writeln!(out, "{errors}");
    let a = &s.answers;
    if a.with_partial + a.cache_hit + a.cache_miss + a.cache_bypass > 0
        || a.coverage_mean_percent.is_some()
    {
        let _ = writeln!(
            out,
            "  answers  partial {}  coverage {}  cache hit {} (hit {} miss {} bypass {})  recall {}",
            percent(a.partial_rate),
            a.coverage_mean_percent
                .map_or("-".into(), |c| format!("{c:.2}%")),
            percent(a.cache_hit_rate),
            a.cache_hit,
            a.cache_miss,
            a.cache_bypass,
            a.estimated_recall_mean
                .map_or("-".into(), |r| format!("{r:.3}"))
        );
    }
    if s.send_lag_ms.count > 0 {
        let _ = writeln!(
            out,
            "  sender   lag p99 {}  max {}",
            ms(s.send_lag_ms.p99),
            ms(s.send_lag_ms.max)
        );
    }
}

/// What the report needs besides the recorded figures.
pub(crate) struct Context<'a> {
    pub target: String,
    pub started_at: String,
    pub seed: u64,
    pub queries: usize,
    pub order: QueryOrder,
    pub max_in_flight: usize,
    pub connections_opened: u64,
    pub interrupted: bool,
    pub plans: &'a [StagePlan],
    pub slos: &'a [Slo],
}

pub(crate) fn build(
    ctx: Context<'_>,
    stats: &[StageStats],
    sent: &[u64],
    series: &Series,
) -> Report {
    let stages: Vec<StageReport> = ctx
        .plans
        .iter()
        .zip(stats)
        .zip(sent)
        .map(|((plan, st), &sent)| {
            let shape = Shape {
                name: plan.name.clone(),
                warmup: plan.warmup,
                rate: plan.rate,
                duration: plan.duration,
                scheduled: plan.requests,
                truncated: plan.truncated,
            };
            stage_report(shape, st, sent)
        })
        .collect();

    let mut total_stats = StageStats::new();
    let mut total_shape = Shape {
        name: "total".into(),
        warmup: false,
        rate: 0.0,
        duration: Duration::ZERO,
        scheduled: 0,
        truncated: false,
    };
    let mut total_sent = 0;
    let mut measured = Vec::new();
    for ((plan, st), &n) in ctx.plans.iter().zip(stats).zip(sent) {
        if plan.warmup {
            continue;
        }
        total_stats.merge(st);
        total_sent += n;
        total_shape.duration += plan.duration;
        total_shape.scheduled += plan.requests;
        total_shape.truncated |= plan.truncated;
        measured.push((plan, st));
    }
    if !total_shape.duration.is_zero() {
        total_shape.rate = total_shape.scheduled as f64 / total_shape.duration.as_secs_f64();
    }

    let mut slos = Vec::new();
    let scopes: Vec<(String, &StageStats, u64)> = if measured.len() > 1 {
        measured
            .iter()
            .map(|(p, st)| (format!("stage {}", p.name), *st, p.requests))
            .chain([("total".to_string(), &total_stats, total_shape.scheduled)])
            .collect()
    } else {
        vec![("total".to_string(), &total_stats, total_shape.scheduled)]
    };
    for slo in ctx.slos {
        for (scope, st, scheduled) in &scopes {
            slos.push(slo.evaluate(scope, &figures(st, *scheduled)));
        }
    }

    Report {
        version: env!("CARGO_PKG_VERSION").to_string(),
        target: ctx.target,
        started_at: ctx.started_at,
        seed: ctx.seed,
        queries: ctx.queries,
        order: ctx.order,
        max_in_flight: ctx.max_in_flight,
        connections_opened: ctx.connections_opened,
        interrupted: ctx.interrupted,
        stages,
        total: stage_report(total_shape, &total_stats, total_sent),
        slos,
        series: series_report(series),
    }
}

fn figures(st: &StageStats, scheduled: u64) -> Figures<'_> {
    Figures {
        latency: &st.latency,
        scheduled,
        completed: st.completed,
        errors: st.errors,
        dropped: st.dropped,
        partial_rate: st.answers.partial_rate(),
        cache_hit_rate: st.answers.cache_hit_rate(),
        coverage_percent: st.answers.coverage_mean(),
        recall: st.answers.recall_mean(),
    }
}

struct Shape {
    name: String,
    warmup: bool,
    rate: f64,
    duration: Duration,
    scheduled: u64,
    truncated: bool,
}

fn stage_report(shape: Shape, st: &StageStats, sent: u64) -> StageReport {
    let secs = shape.duration.as_secs_f64();
    let a = &st.answers;
    StageReport {
        name: shape.name,
        warmup: shape.warmup,
        rate: shape.rate,
        duration_s: secs,
        scheduled: shape.scheduled,
        sent,
        completed: st.completed,
        dropped: st.dropped,
        truncated: shape.truncated,
        achieved_rate: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
        responses: st.responses,
        ok: st.ok,
        errors: st.errors,
        error_rate: (st.completed > 0).then(|| st.errors as f64 / st.completed as f64),
        drop_rate: (shape.scheduled > 0).then(|| st.dropped as f64 / shape.scheduled as f64),
        errors_by_status: st.by_status.clone(),
        error_codes: st.error_codes.clone(),
        latency_ms: latency(&st.latency),
        send_lag_ms: latency(&st.send_lag),
        distribution: distribution(&st.latency),
        answers: Answers {
            with_partial: a.partial_known,
            partial: a.partial,
            partial_rate: a.partial_rate(),
            coverage_mean_percent: a.coverage_mean(),
            estimated_recall_mean: a.recall_mean(),
            cache_hit: a.cache_hit,
            cache_miss: a.cache_miss,
            cache_bypass: a.cache_bypass,
            cache_hit_rate: a.cache_hit_rate(),
            took_ms_mean: a.took_mean(),
        },
        hdr_histogram: encode(&st.latency),
    }
}

fn to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency {
            count: 0,
            min: 0.0,
            mean: 0.0,
            stdev: 0.0,
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p99_9: 0.0,
            p99_99: 0.0,
            max: 0.0,
        };
    }
    let q = |q: f64| to_ms(h.value_at_quantile(q));
    Latency {
        count: h.len(),
        min: to_ms(h.min()),
        mean: h.mean() / 1000.0,
        stdev: h.stdev() / 1000.0,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p99_9: q(0.999),
        p99_99: q(0.9999),
        max: to_ms(h.max()),
    }
}

/// Points at x = log10(1/(1-q)) every 0.05, up to what the sample count can
/// resolve, then the maximum.
fn distribution(h: &Histogram<u64>) -> Vec<DistributionPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let top = (h.len() as f64).log10().clamp(0.0, 7.0);
    let steps = (top / 0.05).floor() as u32;
    let mut points: Vec<DistributionPoint> = (0..=steps)
        .map(|i| {
            let q = 1.0 - 10f64.powf(-f64::from(i) * 0.05);
            DistributionPoint {
                percentile: q * 100.0,
                latency_ms: to_ms(h.value_at_quantile(q)),
            }
        })
        .collect();
    points.push(DistributionPoint {
        percentile: 100.0,
        latency_ms: to_ms(h.max()),
    });
    points
}

fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut bytes) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Err(_) => String::new(),
    }
}

fn series_report(series: &Series) -> SeriesReport {
    let width = series.width.as_secs_f64();
    SeriesReport {
        interval_s: width,
        points: series
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let h = &b.latency;
                let q = |q: f64| (!h.is_empty()).then(|| to_ms(h.value_at_quantile(q)));
                SeriesPoint {
                    t_s: i as f64 * width,
                    completed: h.len(),
                    errors: b.errors,
                    dropped: b.dropped,
                    p50_ms: q(0.5),
                    p99_ms: q(0.99),
                    max_ms: (!h.is_empty()).then(|| to_ms(h.max())),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn distribution_reaches_the_resolvable_tail() {
        let mut h = crate::stats::new_histogram(3);
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let d = distribution(&h);
        assert_eq!(d.first().unwrap().percentile, 0.0);
        let last_tick = &d[d.len() - 2];
        assert!(
            (last_tick.percentile - 99.99).abs() < 1e-6,
            "{}",
            last_tick.percentile
        );
        assert_eq!(d.last().unwrap().percentile, 100.0);
        assert!(d.windows(2).all(|w| w[0].latency_ms <= w[1].latency_ms));
    }

    #[test]
    fn histogram_encoding_round_trips() {
        let mut h = crate::stats::new_histogram(3);
        h.record(1234).unwrap();
        h.record(98_765).unwrap();
        let text = encode(&h);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        let back: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.max(), h.max());
    }
}

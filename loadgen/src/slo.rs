//! Service level objectives such as `p99<=50ms` or `partial<=1%`: parsed from
//! text, then checked against the figures of one stage (or the whole run).
//!
//! Grammar: `METRIC OP VALUE`, spaces allowed, where OP is `<=`, `<`, `>=` or `>`.
//! - Latency metrics take a duration with a unit (`250us`, `50ms`, `1s`):
//!   `pN` for any percentile N in (0, 100] (`p50`, `p99.9`, `p99.99`), `max`, `mean`.
//! - Rate metrics take a percentage (`0.1%`): `errors` (failed responses over
//!   completed requests), `drops` (requests not sent on time over scheduled
//!   ones), `partial` (partial answers), `cache_hit` (hits over hits and
//!   misses), `coverage` (mean coverage of the corpus), `recall` (mean
//!   estimated recall).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One objective, e.g. `p99<=50ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slo {
    pub metric: Metric,
    pub op: Op,
    pub threshold: Threshold,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A latency percentile, 0 < p <= 100.
    Percentile(f64),
    Max,
    Mean,
    Errors,
    Drops,
    Partial,
    CacheHit,
    Coverage,
    Recall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Latency(Duration),
    /// A fraction in [0, 1], written as a percentage.
    Ratio(f64),
}

/// Why an SLO expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SLO `{text}`: {reason}")]
pub struct ParseSloError {
    text: String,
    reason: String,
}

/// The figures an SLO is checked against.
pub struct Figures<'a> {
    /// Latency in microseconds.
    pub latency: &'a Histogram<u64>,
    pub scheduled: u64,
    pub completed: u64,
    pub errors: u64,
    pub dropped: u64,
    pub partial_rate: Option<f64>,
    pub cache_hit_rate: Option<f64>,
    /// Mean coverage, in percent.
    pub coverage_percent: Option<f64>,
    pub recall: Option<f64>,
}

/// The verdict on one SLO in one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    pub slo: String,
    /// The stage name, or `total` for the whole measured run.
    pub scope: String,
    /// The measured value, in milliseconds for latency and percent for rates;
    /// `None` when there was nothing to measure (which fails the SLO).
    pub actual: Option<f64>,
    pub pass: bool,
}

impl Metric {
    fn is_latency(self) -> bool {
        matches!(self, Metric::Percentile(_) | Metric::Max | Metric::Mean)
    }
}

impl Slo {
    /// Checks this SLO against `figures`, naming the result after `scope`.
    pub fn evaluate(&self, scope: &str, figures: &Figures<'_>) -> SloResult {
        let (actual, pass) = match self.threshold {
            Threshold::Latency(limit) => {
                let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
                match latency_us(self.metric, figures.latency) {
                    Some(value) => {
                        // A value the histogram cannot tell apart from the limit
                        // counts as equal to it: the histogram reports the top of
                        // its bucket, which may lie just above the limit.
                        let ordering = if figures.latency.equivalent(value, limit_us) {
                            std::cmp::Ordering::Equal
                        } else {
                            value.cmp(&limit_us)
                        };
                        (Some(value as f64 / 1000.0), self.op.holds(ordering))
                    }
                    None => (None, false),
                }
            }
            Threshold::Ratio(limit) => match ratio(self.metric, figures) {
                Some(value) => {
                    // Percentages written in decimal are not exact in binary:
                    // values this close are equal.
                    let ordering = if (value - limit).abs() < 1e-12 {
                        std::cmp::Ordering::Equal
                    } else {
                        value
                            .partial_cmp(&limit)
                            .unwrap_or(std::cmp::Ordering::Greater)
                    };
                    (Some(value * 100.0), self.op.holds(ordering))
                }
                None => (None, false),
            },
        };
        SloResult {
            slo: self.to_string(),
            scope: scope.to_string(),
            actual,
            pass,
        }
    }

    /// The percentile and threshold of a latency percentile SLO, for plotting.
    pub fn percentile_target(&self) -> Option<(f64, Duration)> {
        match (self.metric, self.threshold) {
            (Metric::Percentile(p), Threshold::Latency(limit)) => Some((p, limit)),
            (Metric::Max, Threshold::Latency(limit)) => Some((100.0, limit)),
            _ => None,
        }
    }
}

fn latency_us(metric: Metric, hist: &Histogram<u64>) -> Option<u64> {
    if hist.is_empty() {
        return None;
    }
    match metric {
        // Rounded so that p99.9 asks for exactly the quantile 0.999, as the
        // report does, not 0.9990000000000001.
        Metric::Percentile(p) => Some(hist.value_at_quantile((p * 1e9).round() / 1e11)),
        Metric::Max => Some(hist.max()),
        Metric::Mean => Some(hist.mean().round() as u64),
        _ => None,
    }
}

fn ratio(metric: Metric, f: &Figures<'_>) -> Option<f64> {
    let fraction = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    match metric {
        Metric::Errors => fraction(f.errors, f.completed),
        Metric::Drops => fraction(f.dropped, f.scheduled),
        Metric::Partial => f.partial_rate,
        Metric::CacheHit => f.cache_hit_rate,
        Metric::Coverage => f.coverage_percent.map(|p| p / 100.0),
        Metric::Recall => f.recall,
        _ => None,
    }
}

impl Op {
    fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Lt => ordering == Less,
            Op::Le => ordering != Greater,
            Op::Gt => ordering == Greater,
            Op::Ge => ordering != Less,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

impl FromStr for Slo {
    type Err = ParseSloError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| ParseSloError {
            text: text.to_string(),
            reason,
        };
        let Some(at) = text.find(['<', '>']) else {
            return Err(fail(
                "expected METRIC OP VALUE with OP one of <=, <, >=, >, e.g. p99<=50ms".into(),
            ));
        };
        let (name, rest) = text.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else {
            return Err(fail("expected an operator".into()));
        };
        let metric = parse_metric(name.trim()).map_err(fail)?;
        let value = value.trim();
        if value.is_empty() {
            return Err(fail("missing a value after the operator".into()));
        }
        let threshold = if metric.is_latency() {
            let d = humantime::parse_duration(value).map_err(|e| {
                fail(format!(
                    "`{value}` is not a duration with a unit such as 50ms or 1s ({e})"
                ))
            })?;
            Threshold::Latency(d)
        } else {
            let Some(number) = value.strip_suffix('%') else {
                return Err(fail(format!(
                    "`{}` takes a percentage, e.g. {}<=1%",
                    name.trim(),
                    name.trim()
                )));
            };
            let percent: f64 = number
                .trim()
                .parse()
                .map_err(|_| fail(format!("`{value}` is not a percentage")))?;
            if !(0.0..=100.0).contains(&percent) {
                return Err(fail(format!("{percent}% is outside 0% to 100%")));
            }
            Threshold::Ratio(percent / 100.0)
        };
        Ok(Slo {
            metric,
            op,
            threshold,
        })
    }
}

fn parse_metric(name: &str) -> Result<Metric, String> {
    let lower = name.to_ascii_lowercase();
    let metric = match lower.as_str() {
        "" => return Err("missing a metric before the operator".into()),
        "max" => Metric::Max,
        "mean" | "avg" => Metric::Mean,
        "errors" | "error" | "error_rate" => Metric::Errors,
        "drops" | "dropped" | "drop_rate" => Metric::Drops,
        "partial" | "partials" | "partial_rate" => Metric::Partial,
        "cache_hit" | "cache-hit" | "cache_hits" | "hit_rate" => Metric::CacheHit,
        "coverage" => Metric::Coverage,
        "recall" | "estimated_recall" => Metric::Recall,
        other => {
            let Some(number) = other.strip_prefix('p') else {
                return Err(format!(
                    "unknown metric `{name}`; expected pN (e.g. p99.9), max, mean, errors, \
                     drops, partial, cache_hit, coverage or recall"
                ));
            };
            let p: f64 = number
                .parse()
                .map_err(|_| format!("`{name}` is not a percentile such as p99 or p99.9"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("percentile {p} is outside (0, 100]"));
            }
            Metric::Percentile(p)
        }
    };
    Ok(metric)
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Percentile(p) => write!(f, "p{p}"),
            Metric::Max => f.write_str("max"),
            Metric::Mean => f.write_str("mean"),
            Metric::Errors => f.write_str("errors"),
            Metric::Drops => f.write_str("drops"),
            Metric::Partial => f.write_str("partial"),
            Metric::CacheHit => f.write_str("cache_hit"),
            Metric::Coverage => f.write_str("coverage"),
            Metric::Recall => f.write_str("recall"),
        }
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.metric, self.op.as_str())?;
        match self.threshold {
            Threshold::Latency(d) => write!(f, "{}", humantime::format_duration(d)),
            Threshold::Ratio(r) => write!(f, "{}%", r * 100.0),
        }
    }
}

impl TryFrom<String> for Slo {
    type Error = ParseSloError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Slo> for String {
    fn from(slo: Slo) -> String {
        slo.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_us: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in values_us {
            h.record(*v).unwrap();
        }
        h
    }

    fn figures(h: &Histogram<u64>) -> Figures<'_> {
        Figures {
            latency: h,
            scheduled: 1000,
            completed: 1000,
            errors: 1,
            dropped: 0,
            partial_rate: Some(0.02),
            cache_hit_rate: None,
            coverage_percent: Some(99.5),
            recall: Some(0.97),
        }
    }

    #[test]
    fn parses_the_documented_forms() {
        let slo: Slo = "p99<=50ms".parse().unwrap();
        assert_eq!(slo.metric, Metric::Percentile(99.0));
        assert_eq!(slo.op, Op::Le);
        assert_eq!(slo.threshold, Threshold::Latency(Duration::from_millis(50)));

        let slo: Slo = " p99.9 < 100ms ".parse().unwrap();
        assert_eq!(slo.metric, Metric::Percentile(99.9));
        assert_eq!(slo.op, Op::Lt);

        let slo: Slo = "max<=1s".parse().unwrap();
        assert_eq!(slo.metric, Metric::Max);

        let slo: Slo = "partial<=1%".parse().unwrap();
        assert_eq!(slo.threshold, Threshold::Ratio(0.01));

        let slo: Slo = "errors<=0.1%".parse().unwrap();
        assert_eq!(slo.metric, Metric::Errors);
        assert!(matches!(slo.threshold, Threshold::Ratio(r) if (r - 0.001).abs() < 1e-12));

        let slo: Slo = "drops<=0%".parse().unwrap();
        assert_eq!(slo.threshold, Threshold::Ratio(0.0));

        let slo: Slo = "cache_hit>=50%".parse().unwrap();
        assert_eq!((slo.metric, slo.op), (Metric::CacheHit, Op::Ge));

        let slo: Slo = "P99.99>250us".parse().unwrap();
        assert_eq!(slo.metric, Metric::Percentile(99.99));
        assert_eq!(slo.op, Op::Gt);
    }

    #[test]
    fn rejects_bad_expressions_with_a_reason() {
        for (text, needle) in [
            ("p99=50ms", "OP one of"),
            ("p99<=50", "duration"),
            ("p99<=", "missing a value"),
            ("<=50ms", "missing a metric"),
            ("p101<=50ms", "outside"),
            ("p0<=50ms", "outside"),
            ("pxx<=50ms", "percentile"),
            ("latency<=50ms", "unknown metric"),
            ("partial<=1", "percentage"),
            ("errors<=150%", "outside"),
            ("errors<=abc%", "not a percentage"),
        ] {
            let err = text.parse::<Slo>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.starts_with("invalid SLO"), "{err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "p99<=50ms",
            "p99.9<100ms",
            "max<=1s",
            "errors<=0.1%",
            "cache_hit>=50%",
        ] {
            let slo: Slo = text.parse().unwrap();
            assert_eq!(slo.to_string(), text);
            assert_eq!(slo.to_string().parse::<Slo>().unwrap(), slo);
        }
    }

    #[test]
    fn latency_slos_pass_and_fail_as_they_should() {
        // 98 fast requests at 10 ms and two slow ones at 200 ms.
        let mut values = vec![10_000; 98];
        values.extend([200_000, 200_000]);
        let h = hist(&values);
        let f = figures(&h);
        let check = |text: &str| text.parse::<Slo>().unwrap().evaluate("s", &f).pass;
        assert!(check("p50<=10ms"), "equal passes <=");
        assert!(!check("p50<10ms"), "equal fails <");
        assert!(check("p90<=11ms"));
        assert!(!check("p99<=50ms"));
        assert!(check("p99<=200ms"));
        assert!(!check("max<200ms"));
        assert!(check("p99>100ms"));
        assert!(check("mean<=20ms"));
    }

    #[test]
    fn rate_slos_pass_and_fail_as_they_should() {
        let h = hist(&[1000]);
        let f = figures(&h);
        let check = |text: &str| text.parse::<Slo>().unwrap().evaluate("s", &f).pass;
        assert!(check("errors<=0.1%"));
        assert!(!check("errors<0.1%"));
        assert!(check("drops<=0%"));
        assert!(!check("partial<=1%"));
        assert!(check("partial<=2%"));
        assert!(check("coverage>=99%"));
        assert!(!check("coverage>=99.9%"));
        assert!(check("recall>=95%"));
        let result = "cache_hit>=50%".parse::<Slo>().unwrap().evaluate("s", &f);
        assert!(!result.pass, "no data fails");
        assert_eq!(result.actual, None);
    }

    #[test]
    fn no_latency_data_fails() {
        let h = hist(&[]);
        let result = "p99<=1s"
            .parse::<Slo>()
            .unwrap()
            .evaluate("s", &figures(&h));
        assert!(!result.pass);
    }
}

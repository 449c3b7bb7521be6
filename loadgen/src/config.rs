//! Configuration: the command-line flags ([`Cli`]) and the plain-data
//! [`Config`] they fill, which is also what a program builds to call
//! [`crate::run`] directly.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::slo::Slo;

/// The highest rate a stage may ask for, in requests per second.
pub const MAX_RATE: f64 = 200_000.0;
/// The longest run, warmup included.
pub const MAX_RUN: Duration = Duration::from_secs(3600);
/// No run sends more requests than this, whatever `--max-requests` says.
pub const HARD_MAX_REQUESTS: u64 = 100_000_000;
/// The longest a single request may take before it counts as timed out.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The most requests in flight at once (each needs a connection).
pub const MAX_IN_FLIGHT: usize = 16_384;
/// The most stages in one run.
pub const MAX_STAGES: usize = 100;

const ABOUT: &str = "Open-loop load generator for the search API, with HDR \
histograms and latency SLO checks";

const AFTER_HELP: &str = "\
Requests go out on a schedule fixed in advance, whatever the server does, and \
latency is measured from each request's scheduled time, so a stall shows in the \
percentiles. Requests that could not be sent within --max-lag of their time are \
counted as dropped.

Examples:
  loadgen --target http://127.0.0.1:8080 --rate 500 --duration 30s --queries q.txt \\
          --slo 'p99<=50ms' --slo 'errors<=0.1%'
  loadgen --target http://127.0.0.1:8080 --queries q.txt --zipf 1.1 --warmup 5s \\
          --stage 30s@500 --stage 30s@2000 --report run.json --plot run.svg

SLOs: pN (p50, p99.9, ...), max, mean take a duration (50ms); errors, drops, \
partial, cache_hit, coverage, recall take a percentage (1%). Operators: <= < >= >.

Exit codes: 0 every SLO passed, 1 an SLO failed, 2 usage error, 3 runtime failure \
(e.g. the target could not be reached).";

/// The command line of the `loadgen` binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// Base URL of the search API; `/search` is added when the URL has no path.
    /// Only loopback hosts, unless allowed with --allow-host.
    #[arg(long, env = "LOADGEN_TARGET", value_name = "URL")]
    pub target: String,

    /// Requests per second for a single stage (with --duration).
    #[arg(long, value_parser = parse_rate, value_name = "R")]
    pub rate: Option<f64>,

    /// Length of a single stage (with --rate), e.g. 30s or 2m.
    #[arg(long, value_parser = parse_duration, value_name = "D")]
    pub duration: Option<Duration>,

    /// A stage DURATION@RATE, e.g. 30s@500; repeat for several stages, each
    /// reported separately. Replaces --rate and --duration.
    #[arg(long = "stage", value_parser = parse_stage, value_name = "D@R")]
    pub stages: Vec<Stage>,

    /// Unmeasured warmup at the first stage's rate before the measured stages.
    #[arg(long, value_parser = parse_duration, value_name = "D")]
    pub warmup: Option<Duration>,

    /// File of queries, one a line, most popular first.
    #[arg(long, value_name = "FILE", required_unless_present = "query")]
    pub queries: Option<PathBuf>,

    /// Send this one query instead of reading a queries file.
    #[arg(long, value_name = "STRING", conflicts_with = "queries")]
    pub query: Option<String>,

    /// Sample queries by a Zipf law of exponent S over the file's order
    /// [default: 1.0].
    #[arg(long, value_name = "S", conflicts_with = "replay")]
    pub zipf: Option<f64>,

    /// Send the queries in the file's order, starting over at the end.
    #[arg(long)]
    pub replay: bool,

    /// Hits asked for (`k` parameter).
    #[arg(long, default_value_t = 10)]
    pub k: u32,

    /// Server-side search budget (`timeout_ms` parameter).
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub timeout_ms: u64,

    /// Ask the server to bypass its caches (`nocache=true`).
    #[arg(long)]
    pub nocache: bool,

    /// A latency or rate objective, e.g. 'p99<=50ms' or 'errors<=0.1%'; repeatable.
    #[arg(long = "slo", value_name = "EXPR")]
    pub slos: Vec<Slo>,

    /// Write every figure, per stage, as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Write an SVG plot of latency by percentile and over time to FILE.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,

    /// Allow a target host that is not loopback; repeatable.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,

    /// Stop after this many requests [default: what the stages schedule].
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,

    /// Most requests in flight, hence connections [default: twice the peak
    /// rate, at least 64, at most 16384].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<usize>,

    /// A request not sent within this of its scheduled time is dropped.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "D")]
    pub max_lag: Duration,

    /// Client-side limit on one request, response body included.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "D")]
    pub request_timeout: Duration,

    /// Seed for Zipf sampling [default: random, printed in the report].
    #[arg(long)]
    pub seed: Option<u64>,

    /// Runtime worker threads [default: the cores this process may use].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// One phase of a run: `rate` requests per second for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    pub rate: f64,
}

/// Where the queries come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuerySource {
    /// A file with one query a line, most popular first; blank lines are skipped.
    File(PathBuf),
    /// The same query every time.
    Fixed(String),
    /// Queries given in memory, most popular first.
    List(Vec<String>),
}

/// How the next query is picked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryOrder {
    /// Rank r (1-based, in the source's order) is picked with probability
    /// proportional to 1/r^exponent.
    Zipf { exponent: f64 },
    /// In order, starting over at the end.
    Replay,
}

/// How progress is shown while the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// Nothing.
    Off,
    /// A line rewritten once a second when stderr is a terminal, else a plain
    /// line every ten seconds.
    Auto,
}

/// Everything a run needs. Build it from flags with [`Cli::into_config`] or
/// directly with [`Config::new`] and field updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub target: String,
    pub allow_hosts: Vec<String>,
    pub stages: Vec<Stage>,
    #[serde(with = "humantime_serde")]
    pub warmup: Option<Duration>,
    pub queries: QuerySource,
    pub order: QueryOrder,
    pub k: u32,
    pub timeout_ms: u64,
    pub nocache: bool,
    pub slos: Vec<Slo>,
    /// A cap on the requests of the whole run, warmup included.
    pub max_requests: Option<u64>,
    /// A cap on concurrent requests; the default scales with the peak rate.
    pub max_in_flight: Option<usize>,
    /// How late a request may be sent before it is counted as dropped instead.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Fixes the Zipf sample sequence, to repeat a run exactly.
    pub seed: Option<u64>,
    pub report: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub progress: Progress,
}

impl Config {
    /// A single-stage run at `rate` for `duration`, with the CLI's defaults
    /// and progress off.
    pub fn new(
        target: impl Into<String>,
        rate: f64,
        duration: Duration,
        queries: QuerySource,
    ) -> Config {
        Config {
            target: target.into(),
            allow_hosts: Vec::new(),
            stages: vec![Stage { duration, rate }],
            warmup: None,
            queries,
            order: QueryOrder::Zipf { exponent: 1.0 },
            k: 10,
            timeout_ms: 100,
            nocache: false,
            slos: Vec::new(),
            max_requests: None,
            max_in_flight: None,
            max_lag: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            seed: None,
            report: None,
            plot: None,
            progress: Progress::Off,
        }
    }

    /// The requests the stages and warmup schedule, before any cap.
    pub fn planned_requests(&self) -> u64 {
        let warmup = match (self.warmup, self.stages.first()) {
            (Some(d), Some(first)) => stage_requests(d, first.rate),
            _ => 0,
        };
        self.stages
            .iter()
            .map(|s| stage_requests(s.duration, s.rate))
            .fold(warmup, u64::saturating_add)
    }

    /// The cap on in-flight requests this run uses.
    pub fn in_flight_limit(&self) -> usize {
        self.max_in_flight.unwrap_or_else(|| {
            let peak = self.stages.iter().map(|s| s.rate).fold(0.0, f64::max);
            ((peak * 2.0).ceil() as usize).clamp(64, MAX_IN_FLIGHT)
        })
    }

    /// Checks the limits that keep every run bounded; a failure is a usage error.
    pub fn validate(&self) -> Result<()> {
        if self.stages.is_empty() {
            return Err(Error::usage(
                "no stage: give --rate and --duration, or --stage DURATION@RATE",
            ));
        }
        if self.stages.len() > MAX_STAGES {
            return Err(Error::usage(format!("at most {MAX_STAGES} stages")));
        }
        for stage in &self.stages {
            check_rate(stage.rate).map_err(Error::Usage)?;
            if stage.duration.is_zero() {
                return Err(Error::usage("a stage's duration must be above zero"));
            }
        }
        let total = self
            .stages
            .iter()
            .map(|s| s.duration)
            .fold(self.warmup.unwrap_or_default(), |a, b| a.saturating_add(b));
        if total > MAX_RUN {
            return Err(Error::usage(format!(
                "the run lasts {}, over the limit of {}",
                humantime::format_duration(total),
                humantime::format_duration(MAX_RUN)
            )));
        }
        if self.request_timeout.is_zero() || self.request_timeout > MAX_REQUEST_TIMEOUT {
            return Err(Error::usage(format!(
                "--request-timeout must be above zero and at most {}",
                humantime::format_duration(MAX_REQUEST_TIMEOUT)
            )));
        }
        if self.max_lag.is_zero() || self.max_lag > MAX_REQUEST_TIMEOUT {
            return Err(Error::usage(format!(
                "--max-lag must be above zero and at most {}",
                humantime::format_duration(MAX_REQUEST_TIMEOUT)
            )));
        }
        if let QueryOrder::Zipf { exponent } = self.order {
            if !(exponent.is_finite() && (0.0..=10.0).contains(&exponent)) {
                return Err(Error::usage(format!(
                    "--zipf {exponent} is outside 0 to 10"
                )));
            }
        }
        if self.k == 0 {
            return Err(Error::usage("--k must be at least 1"));
        }
        match self.max_requests {
            Some(0) => return Err(Error::usage("--max-requests must be at least 1")),
            Some(n) if n > HARD_MAX_REQUESTS => {
                return Err(Error::usage(format!(
                    "--max-requests {n} is over the ceiling of {HARD_MAX_REQUESTS}"
                )))
            }
            Some(_) => {}
            None => {
                let planned = self.planned_requests();
                if planned > HARD_MAX_REQUESTS {
                    return Err(Error::usage(format!(
                        "the stages schedule {planned} requests, over the ceiling of \
                         {HARD_MAX_REQUESTS}; lower the rate or duration, or pass --max-requests"
                    )));
                }
            }
        }
        if let Some(n) = self.max_in_flight {
            if n == 0 || n > MAX_IN_FLIGHT {
                return Err(Error::usage(format!(
                    "--max-in-flight must be between 1 and {MAX_IN_FLIGHT}"
                )));
            }
        }
        Ok(())
    }
}

/// Requests a stage of `duration` at `rate` schedules.
pub(crate) fn stage_requests(duration: Duration, rate: f64) -> u64 {
    // The small epsilon keeps 0.3s at 10/s from rounding down to 2.
    (duration.as_secs_f64() * rate + 1e-9).floor() as u64
}

impl Cli {
    /// Turns flags into a [`Config`], checking what clap cannot.
    pub fn into_config(self) -> Result<Config> {
        let stages = match (self.rate, self.duration, self.stages.is_empty()) {
            (Some(rate), Some(duration), true) => vec![Stage { duration, rate }],
            (None, None, false) => self.stages,
            (None, None, true) => {
                return Err(Error::usage(
                    "give --rate and --duration, or one or more --stage DURATION@RATE",
                ))
            }
            (_, _, false) => {
                return Err(Error::usage(
                    "--stage replaces --rate and --duration; give one or the other",
                ))
            }
            (Some(_), None, true) => return Err(Error::usage("--rate needs --duration")),
            (None, Some(_), true) => return Err(Error::usage("--duration needs --rate")),
        };
        let queries = match (self.queries, self.query) {
            (Some(path), None) => QuerySource::File(path),
            (None, Some(q)) => QuerySource::Fixed(q),
            _ => return Err(Error::usage("give --queries FILE or --query STRING")),
        };
        let order = if self.replay {
            QueryOrder::Replay
        } else {
            QueryOrder::Zipf {
                exponent: self.zipf.unwrap_or(1.0),
            }
        };
        let config = Config {
            target: self.target,
            allow_hosts: self.allow_hosts,
            stages,
            warmup: self.warmup.filter(|d| !d.is_zero()),
            queries,
            order,
            k: self.k,
            timeout_ms: self.timeout_ms,
            nocache: self.nocache,
            slos: self.slos,
            max_requests: self.max_requests,
            max_in_flight: self.max_in_flight,
            max_lag: self.max_lag,
            request_timeout: self.request_timeout,
            seed: self.seed,
            report: self.report,
            plot: self.plot,
            progress: if self.quiet {
                Progress::Off
            } else {
                Progress::Auto
            },
        };
        config.validate()?;
        Ok(config)
    }
}

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration with a unit such as 30s or 500ms ({e})"))
}

fn check_rate(rate: f64) -> std::result::Result<f64, String> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("rate {rate} must be above zero"));
    }
    if rate > MAX_RATE {
        return Err(format!("rate {rate}/s is over the limit of {MAX_RATE}/s"));
    }
    Ok(rate)
}

fn parse_rate(text: &str) -> std::result::Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    let rate: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a rate in requests per second"))?;
    check_rate(rate)
}

fn parse_stage(text: &str) -> std::result::Result<Stage, String> {
    let (duration, rate) = text
        .split_once('@')
        .ok_or_else(|| format!("`{text}` is not DURATION@RATE, e.g. 30s@500"))?;
    Ok(Stage {
        duration: parse_duration(duration)?,
        rate: parse_rate(rate)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        let mut all = vec!["loadgen", "--target", "http://127.0.0.1:1", "--query", "x"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
    }

    #[test]
    fn parses_stages_and_durations() {
        assert_eq!(
            parse_stage("30s@500").unwrap(),
            Stage {
                duration: Duration::from_secs(30),
                rate: 500.0
            }
        );
        assert_eq!(parse_stage("500ms@2.5/s").unwrap().rate, 2.5);
        assert!(parse_stage("30s").is_err());
        assert!(parse_stage("30@500").unwrap_err().contains("unit"));
        assert!(parse_stage("30s@0").is_err());
        assert!(parse_stage("30s@1000000").unwrap_err().contains("limit"));
    }

    #[test]
    fn flags_fill_the_config() {
        let config = cli(&[
            "--stage", "1s@10", "--stage", "2s@20", "--warmup", "500ms", "--slo", "p99<=5ms",
            "--zipf", "1.2",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(config.stages.len(), 2);
        assert_eq!(config.warmup, Some(Duration::from_millis(500)));
        assert_eq!(config.order, QueryOrder::Zipf { exponent: 1.2 });
        assert_eq!(config.planned_requests(), 5 + 10 + 40);
        assert_eq!(config.in_flight_limit(), 64);
        assert_eq!(config.progress, Progress::Auto);
    }

    #[test]
    fn conflicting_or_missing_flags_are_usage_errors() {
        let usage = |args: &[&str]| match cli(args).map(Cli::into_config) {
            Err(e) => e.exit_code() == 2,
            Ok(Err(e)) => e.exit_code() == 2,
            Ok(Ok(_)) => false,
        };
        assert!(usage(&[]));
        assert!(usage(&["--rate", "10"]));
        assert!(usage(&[
            "--rate",
            "10",
            "--duration",
            "1s",
            "--stage",
            "1s@1"
        ]));
        assert!(usage(&["--rate", "10", "--duration", "2h"]));
        assert!(usage(&[
            "--rate",
            "10",
            "--duration",
            "1s",
            "--zipf",
            "1",
            "--replay"
        ]));
        assert!(usage(&[
            "--rate",
            "10",
            "--duration",
            "1s",
            "--slo",
            "p99=1ms"
        ]));
        assert!(usage(&[
            "--rate",
            "10",
            "--duration",
            "1s",
            "--max-requests",
            "0"
        ]));
        assert!(usage(&["--rate", "nan", "--duration", "1s"]));
        assert!(usage(&[
            "--rate",
            "10",
            "--duration",
            "1s",
            "--request-timeout",
            "5m"
        ]));
    }

    #[test]
    fn config_round_trips_through_json() {
        let mut config = Config::new(
            "http://127.0.0.1:8080",
            100.0,
            Duration::from_secs(3),
            QuerySource::Fixed("q".into()),
        );
        config.slos.push("p99<=50ms".parse().unwrap());
        let json = serde_json::to_string(&config).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
}

//! The live progress line on stderr: once a second, rewritten in place, when
//! stderr is a terminal; a plain line every ten seconds otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::schedule::StagePlan;
use crate::stats::Recorder;

/// Prints progress until the task is aborted; call [`finish`] afterwards.
pub(crate) async fn run(recorder: Arc<Recorder>, plans: Vec<StagePlan>, start: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let mut ticker = tokio::time::interval_at((start + period).into(), period);
    let mut last_sent = 0;
    let mut last_at = start;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(start);
        let stage = plans.iter().rposition(|p| p.start <= elapsed).unwrap_or(0);
        let snap = recorder.snapshot(stage);
        let rate = (snap.sent - last_sent) as f64 / now.duration_since(last_at).as_secs_f64();
        last_sent = snap.sent;
        last_at = now;
        let plan = &plans[stage];
        let line = format!(
            "[{:>5.0}s] {} @ {}/s  sent {}  rate {:.0}/s  p99 {}  errors {}  dropped {}",
            elapsed.as_secs_f64(),
            if plan.warmup {
                "warmup".to_string()
            } else {
                format!(
                    "stage {}/{}",
                    plan.name,
                    plans.iter().filter(|p| !p.warmup).count()
                )
            },
            crate::report::rate(plan.rate),
            snap.sent,
            rate,
            snap.p99_us
                .map_or("-".to_string(), |us| format!("{:.2}ms", us as f64 / 1000.0)),
            snap.errors,
            snap.dropped
        );
        let mut err = std::io::stderr().lock();
        let _ = if terminal {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

/// Ends the rewritten line, if there was one.
pub(crate) fn finish() {
    if std::io::stderr().is_terminal() {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

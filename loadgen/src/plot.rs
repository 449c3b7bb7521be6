//! The SVG plot, written by hand: latency by percentile on a log scale of
//! 1/(1-q), as HdrHistogram's plots draw it, one line per stage with the
//! latency SLOs marked; and below it latency over time (p50, p99, max of the
//! requests scheduled in each interval) with the stage boundaries.

use std::fmt::Write as _;

use crate::report::Report;
use crate::slo::Slo;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 920.0;
const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
];
const SLO_COLOR: &str = "#d62728";

/// A rectangle to draw a chart in, with its axes' ranges.
struct Frame {
    top: f64,
    bottom: f64,
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        LEFT + (RIGHT - LEFT) * (v / self.x_max).clamp(0.0, 1.0)
    }

    fn y(&self, v: f64) -> f64 {
        self.bottom - (self.bottom - self.top) * (v / self.y_max).clamp(0.0, 1.0)
    }
}

/// The whole SVG document for a report.
pub fn svg(report: &Report) -> String {
    let mut out = String::new();
    let height = 900.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">loadgen: {} ({})</text>"#,
        escape(&report.target),
        escape(&report.started_at)
    );
    percentile_chart(&mut out, report);
    time_chart(&mut out, report);
    out.push_str("</svg>\n");
    out
}

fn percentile_chart(out: &mut String, report: &Report) {
    let stages: Vec<_> = report.stages.iter().filter(|s| !s.warmup).collect();
    let slos: Vec<(f64, f64, String)> = report
        .slos
        .iter()
        .filter_map(|r| {
            let slo: Slo = r.slo.parse().ok()?;
            let (p, limit) = slo.percentile_target()?;
            Some((p, limit.as_secs_f64() * 1000.0, r.slo.clone()))
        })
        .fold(Vec::new(), |mut acc, s| {
            if !acc.iter().any(|(_, _, t)| *t == s.2) {
                acc.push(s);
            }
            acc
        });
    let nines = |p: f64| {
        if p >= 100.0 {
            f64::INFINITY
        } else {
            (100.0 / (100.0 - p)).log10()
        }
    };
    let mut x_max: f64 = 2.0;
    let mut y_top: f64 = 0.0;
    for s in &stages {
        for p in s.distribution.iter().filter(|p| p.percentile < 100.0) {
            x_max = x_max.max(nines(p.percentile).ceil());
            y_top = y_top.max(p.latency_ms);
        }
    }
    for (p, limit, _) in &slos {
        if p.is_finite() && *p < 100.0 {
            x_max = x_max.max(nines(*p).ceil());
        }
        y_top = y_top.max(*limit);
    }
    let x_max = x_max.min(7.0);
    let (y_max, y_step) = nice_axis(y_top);
    let frame = Frame {
        top: 60.0,
        bottom: 400.0,
        x_max,
        y_max,
    };
    title(out, &frame, "Latency by percentile (from scheduled time)");
    y_axis(out, &frame, y_step, "latency (ms)");
    for k in 0..=(x_max as u32) {
        let label = if k == 0 {
            "0%".to_string()
        } else {
            let digits = k.saturating_sub(2) as usize;
            format!("{:.*}%", digits, 100.0 - 100.0 / 10f64.powi(k as i32))
        };
        vertical_tick(out, &frame, f64::from(k), &label);
    }
    axis_label(out, (LEFT + RIGHT) / 2.0, frame.bottom + 36.0, "percentile");

    for (i, s) in stages.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = s
            .distribution
            .iter()
            .filter(|p| p.percentile < 100.0)
            .map(|p| (frame.x(nines(p.percentile)), frame.y(p.latency_ms)))
            .collect();
        polyline(out, &points, color, "");
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" fill="{color}">stage {} @ {}/s: p99 {:.2}ms, max {:.2}ms</text>"#,
            LEFT + 12.0,
            frame.top + 16.0 + 16.0 * i as f64,
            escape(&s.name),
            crate::report::rate(s.rate),
            s.latency_ms.p99,
            s.latency_ms.max
        );
    }
    for (p, limit, text) in &slos {
        let x = frame.x(nines(*p).min(x_max));
        let y = frame.y(*limit);
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{SLO_COLOR}" stroke-width="2"/><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{SLO_COLOR}" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="{SLO_COLOR}" text-anchor="end">{}</text>"#,
            x - 8.0,
            x + 8.0,
            y - 8.0,
            y + 8.0,
            x - 10.0,
            y - 6.0,
            escape(text)
        );
    }
}

fn time_chart(out: &mut String, report: &Report) {
    let series = &report.series;
    let run_s: f64 = report.stages.iter().map(|s| s.duration_s).sum();
    let x_top = run_s
        .max(series.points.len() as f64 * series.interval_s)
        .max(1.0);
    let (x_max, x_step) = nice_axis(x_top);
    let y_top = series
        .points
        .iter()
        .filter_map(|p| p.max_ms)
        .fold(0.0, f64::max);
    let (y_max, y_step) = nice_axis(y_top);
    let frame = Frame {
        top: 500.0,
        bottom: 840.0,
        x_max,
        y_max,
    };
    title(out, &frame, "Latency over time (by scheduled time)");
    y_axis(out, &frame, y_step, "latency (ms)");
    let mut t = 0.0;
    while t <= x_max + 1e-9 {
        vertical_tick(out, &frame, t, &format!("{t}s"));
        t += x_step;
    }
    axis_label(
        out,
        (LEFT + RIGHT) / 2.0,
        frame.bottom + 36.0,
        "time since start (s)",
    );

    let mut start = 0.0;
    for s in &report.stages {
        let x = frame.x(start);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#555">{} @ {}/s</text>"##,
            frame.top,
            frame.bottom,
            x + 4.0,
            frame.top + 14.0,
            if s.warmup {
                "warmup".to_string()
            } else {
                format!("stage {}", escape(&s.name))
            },
            crate::report::rate(s.rate)
        );
        start += s.duration_s;
    }

    let half = series.interval_s / 2.0;
    let line = |pick: fn(&crate::report::SeriesPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        series
            .points
            .iter()
            .filter_map(|p| Some((frame.x(p.t_s + half), frame.y(pick(p)?))))
            .collect()
    };
    polyline(out, &line(|p| p.max_ms), "#bbbbbb", "");
    polyline(out, &line(|p| p.p99_ms), PALETTE[1], "");
    polyline(out, &line(|p| p.p50_ms), PALETTE[0], "");
    for p in series.points.iter().filter(|p| p.errors + p.dropped > 0) {
        let x = frame.x(p.t_s + half);
        let _ = writeln!(
            out,
            r#"<path d="M{x:.1} {:.1} l-4 7 h8 z" fill="{SLO_COLOR}"><title>{} errors, {} dropped</title></path>"#,
            frame.bottom - 8.0,
            p.errors,
            p.dropped
        );
    }
    for (i, (name, color)) in [("p50", PALETTE[0]), ("p99", PALETTE[1]), ("max", "#bbbbbb")]
        .into_iter()
        .enumerate()
    {
        let x = RIGHT - 220.0 + 60.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            x + 16.0,
            x + 20.0,
            frame.top - 8.0 + 4.0,
            y = frame.top - 8.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" fill="{SLO_COLOR}">▲ errors or drops</text>"#,
        RIGHT - 40.0 - 80.0,
        frame.top - 24.0
    );
}

fn title(out: &mut String, frame: &Frame, text: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
        frame.top - 12.0,
        escape(text)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        frame.top,
        RIGHT - LEFT,
        frame.bottom - frame.top
    );
}

fn y_axis(out: &mut String, frame: &Frame, step: f64, label: &str) {
    let mut v = 0.0;
    while v <= frame.y_max + step * 1e-9 {
        let y = frame.y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            y + 4.0,
            trim_number(v)
        );
        v += step;
    }
    let x = 22.0;
    let y = (frame.top + frame.bottom) / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{y:.1}" text-anchor="middle" transform="rotate(-90 {x} {y:.1})">{}</text>"#,
        escape(label)
    );
}

fn vertical_tick(out: &mut String, frame: &Frame, v: f64, label: &str) {
    let x = frame.x(v);
    let _ = writeln!(
        out,
        r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
        frame.top,
        frame.bottom,
        frame.bottom + 16.0,
        escape(label)
    );
}

fn axis_label(out: &mut String, x: f64, y: f64, text: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#,
        escape(text)
    );
}

fn polyline(out: &mut String, points: &[(f64, f64)], color: &str, dash: &str) {
    if points.is_empty() {
        return;
    }
    let mut d = String::with_capacity(points.len() * 14);
    for (x, y) in points {
        let _ = write!(d, "{x:.1},{y:.1} ");
    }
    let dash = if dash.is_empty() {
        String::new()
    } else {
        format!(r#" stroke-dasharray="{dash}""#)
    };
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
        d.trim_end()
    );
}

/// A round axis maximum at or above `top`, and a round step giving about
/// five ticks.
fn nice_axis(top: f64) -> (f64, f64) {
    let top = if top.is_finite() && top > 0.0 {
        top
    } else {
        1.0
    };
    let rough = top / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * magnitude);
    ((top / step).ceil() * step, step)
}

fn trim_number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_axis(7.3), (8.0, 2.0));
        assert_eq!(nice_axis(1040.0), (1250.0, 250.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(trim_number(0.25), "0.25");
        assert_eq!(trim_number(1000.0), "1000");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"<a&"b">"#), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}

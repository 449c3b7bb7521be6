//! Runs the built `loadgen` binary: exit codes, messages and output files.

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{serve, Behaviour};

const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

fn loadgen(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("LOADGEN_TARGET")
        .output()
        .expect("loadgen runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const BASE: [&str; 4] = ["--target", "http://127.0.0.1:9", "--query", "rust"];

/// The base flags, a rate and a duration unless `extra` gives them, then `extra`.
fn with_base(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = BASE.to_vec();
    if !extra.contains(&"--rate") {
        args.extend(["--rate", "10"]);
    }
    if !extra.contains(&"--duration") {
        args.extend(["--duration", "1s"]);
    }
    args.iter().chain(extra).map(|s| s.to_string()).collect()
}

#[test]
fn bad_flags_exit_with_the_usage_code() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "--target"),
        (
            &[
                "--target",
                "http://127.0.0.1:9",
                "--rate",
                "10",
                "--duration",
                "1s",
            ],
            "--queries",
        ),
        (
            &[
                "--target",
                "http://127.0.0.1:9",
                "--query",
                "q",
                "--rate",
                "ten",
                "--duration",
                "1s",
            ],
            "rate",
        ),
        (
            &[
                "--target",
                "http://127.0.0.1:9",
                "--query",
                "q",
                "--stage",
                "30s",
            ],
            "DURATION@RATE",
        ),
        (
            &[
                "--target",
                "http://127.0.0.1:9",
                "--query",
                "q",
                "--rate",
                "10",
            ],
            "--duration",
        ),
        (
            &[
                "--target",
                "http://127.0.0.1:9",
                "--query",
                "q",
                "--rate",
                "10",
                "--duration",
                "30",
            ],
            "unit",
        ),
        (&["--bogus"], "--bogus"),
    ];
    for (args, needle) in cases {
        let out = loadgen(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn invalid_settings_exit_with_the_usage_code_and_a_message() {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let empty_path = empty.path().to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (with_base(&["--slo", "p99=50ms"]), "invalid SLO"),
        (with_base(&["--slo", "latency<=50ms"]), "unknown metric"),
        (with_base(&["--rate", "1000000"]), "limit"),
        (with_base(&["--duration", "2h"]), "over the limit"),
        (
            with_base(&["--zipf", "1", "--replay"]),
            "cannot be used with",
        ),
        (with_base(&["--max-requests", "0"]), "at least 1"),
        (
            vec![
                "--target",
                "http://127.0.0.1:9",
                "--queries",
                &empty_path,
                "--rate",
                "10",
                "--duration",
                "1s",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "has no queries",
        ),
        (
            vec![
                "--target",
                "http://192.0.2.1",
                "--query",
                "q",
                "--rate",
                "1",
                "--duration",
                "1s",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "--allow-host",
        ),
        (
            vec![
                "--target",
                "https://127.0.0.1",
                "--query",
                "q",
                "--rate",
                "1",
                "--duration",
                "1s",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "https",
        ),
    ];
    for (args, needle) in cases {
        let out = loadgen(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn help_exits_zero() {
    let out = loadgen(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
}

#[test]
fn an_unreachable_target_exits_with_the_runtime_code() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let target = format!("http://127.0.0.1:{port}");
    let out = loadgen(&[
        "--target",
        &target,
        "--query",
        "q",
        "--rate",
        "10",
        "--duration",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_verdicts_set_the_exit_code_and_files_are_written() {
    let url = serve(Behaviour {
        delay: Duration::from_millis(5),
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, "rust\ntokio\nhyper async\n").unwrap();
    let report = dir.path().join("run.json");
    let plot = dir.path().join("run.svg");
    let args: Vec<String> = [
        "--target",
        &url,
        "--queries",
        queries.to_str().unwrap(),
        "--zipf",
        "1.1",
        "--seed",
        "7",
        "--rate",
        "100",
        "--duration",
        "600ms",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        "--slo",
        "p99<=5s",
        "--slo",
        "errors<=0.1%",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let pass = tokio::task::spawn_blocking({
        let args = args.clone();
        move || loadgen(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&pass.stdout);
    assert_eq!(pass.status.code(), Some(0), "{stdout}{}", stderr(&pass));
    assert!(stdout.contains("PASS  p99<=5s"), "{stdout}");

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["total"]["completed"], 60);
    assert_eq!(json["seed"], 7);
    assert!(json["total"]["latency_ms"]["p99"].as_f64().unwrap() >= 5.0);
    assert!(json["total"]["hdr_histogram"].as_str().unwrap().len() > 10);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("Latency by percentile") && svg.contains("99%"));

    let mut failing = args;
    failing.extend(["--slo".to_string(), "p50<=1us".to_string()]);
    let fail = tokio::task::spawn_blocking(move || {
        loadgen(&failing.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&fail.stdout);
    assert_eq!(fail.status.code(), Some(1), "{stdout}{}", stderr(&fail));
    assert!(stdout.contains("FAIL  p50<=1us"), "{stdout}");
}

//! `frontend serve --embed-leaf`: the real binary serving every shard in
//! its own process, and its flag errors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "embedded-test-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// One HTTP/1.1 GET; the status and the body, or None when nothing answers.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

#[test]
fn a_frontend_with_an_embedded_leaf_answers_every_shard_and_stops_cleanly() {
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_frontend"))
        .args(["serve", "--shards", "2", "--http", &http])
        .args(["--grpc", &format!("127.0.0.1:{}", free_port())])
        .args(["--embed-leaf", "--", "--grpc", "127.0.0.1:0"])
        .env("SEARCH_CLUSTER_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the frontend binary runs");
    let started = Instant::now();
    let body = loop {
        // Chunked or not, the JSON object is in the body.
        if let Some((200, body)) = get(&http, "/search?q=json+parser&nocache=true") {
            if body.contains("\"partial\":false") {
                break body;
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let output = child.wait_with_output().expect("stderr");
            panic!(
                "no complete answer in 120 s: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("\"shards_answered\":2"), "{body}");
    assert!(body.contains("\"shard\":1"), "{body}");
    // A bad query is still the frontend's 400, with no leaf involved.
    let (status, _) = get(&http, "/search?q=+").expect("an answer");
    assert_eq!(status, 400);
    // SIGTERM (this test's own child): the frontend and its leaf drain and
    // the process exits 0.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let output = child.wait_with_output().expect("the frontend exits");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn config_error(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_frontend"))
        .args(["serve", "--shards", "2", "--http", "127.0.0.1:0"])
        .args(["--grpc", "127.0.0.1:0"])
        .args(args)
        .env("SEARCH_CLUSTER_TOKEN", TOKEN)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the frontend binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    stderr
}

#[test]
fn bad_embedded_leaf_flags_are_configuration_errors() {
    let stderr = config_error(&["--embed-leaf", "--", "--shards", "3"]);
    assert!(
        stderr.starts_with("error: --embed-leaf: the leaf's --shards 3 differs"),
        "{stderr}"
    );
    let stderr = config_error(&["--embed-leaf", "--", "--no-such-flag"]);
    assert!(stderr.contains("--embed-leaf"), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    let stderr = config_error(&["--embed-leaf", "--", "--shard", "0,0"]);
    assert!(stderr.starts_with("error: --embed-leaf:"), "{stderr}");
    // Leaf flags without --embed-leaf are refused, not ignored.
    let stderr = config_error(&["--", "--shard", "0"]);
    assert!(stderr.contains("--embed-leaf"), "{stderr}");
}

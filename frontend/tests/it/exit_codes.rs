//! The frontend binary follows `svc`'s exit-code convention: a listener
//! that cannot be bound is one line on stderr and exit code 3.

use std::process::Command;

#[test]
fn a_taken_port_is_one_line_and_exit_code_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_frontend"))
        .args([
            "serve",
            "--shards",
            "1",
            "--http",
            &addr,
            "--grpc",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_BACKTRACE")
        .env("SEARCH_CLUSTER_TOKEN", "exit-code-test")
        .output()
        .expect("the frontend binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "stderr: {stderr}");
    let lines: Vec<_> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("error: cannot bind http address {addr}: ")),
        "{stderr}"
    );
}

#[test]
fn zero_shards_is_a_configuration_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_frontend"))
        .args([
            "serve",
            "--shards",
            "0",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
        ])
        .output()
        .expect("the frontend binary runs");
    assert_eq!(output.status.code(), Some(2));
}

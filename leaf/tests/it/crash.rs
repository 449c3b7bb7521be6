//! `leaf --fault-crash-on TERM`: the real binary aborts on a query of death.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use proto::leaf::leaf_client::LeafClient;
use proto::leaf::SearchRequest;
use tokio::process::Command;

fn search(query: &str) -> SearchRequest {
    SearchRequest {
        query: query.to_string(),
        k: 5,
        stats: None,
        score_floor: None,
        shard: None,
    }
}

#[tokio::test]
async fn a_query_containing_the_term_aborts_the_process() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_leaf"))
        .args(["--corpus", "builtin", "--shard", "0", "--shards", "1"])
        .args(["--grpc", &format!("127.0.0.1:{port}")])
        .args(["--fault-crash-on", "Poison", "--insecure-no-auth"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..600 {
        if let Ok(c) = LeafClient::connect(url.clone()).await {
            client = Some(c);
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the leaf exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = client.expect("the leaf serves within a minute");
    client.search(search("json parser")).await.unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "an ordinary query is served"
    );

    assert!(client.search(search("json poison")).await.is_err());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the leaf exits")
        .unwrap();
    assert_eq!(status.signal(), Some(libc_sigabrt()), "{status:?}");
}

/// SIGABRT on every platform this runs on (Linux, macOS).
fn libc_sigabrt() -> i32 {
    6
}

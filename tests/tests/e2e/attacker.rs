//! The internal plane seen by an attacker on the cluster's network: forged
//! cache writes, unauthenticated calls to leaves, caches and the lease
//! registry, a compromised cache server, a client certificate from another
//! authority; and the operator's side: token rotation and certificate
//! reload without a restart. Each test fails without its protection.

use std::net::SocketAddr;
use std::time::Duration;

use frontend_core::cluster::cache_client::{cache_key, Signer};
use proto::cache::cache_client::CacheClient;
use proto::cache::{CachedAnswer, CachedHit, GetRequest, PutRequest};
use proto::leaf::leaf_client::LeafClient;
use proto::leaf::{InfoRequest, SearchRequest, TermStatsRequest};
use proto::lease::lease_client::LeaseClient;
use proto::lease::{GrantRequest, ListRequest};
use serde_json::Value;
use svc::auth::TokenConfig;
use svc::tls::testing::{write_atomically, Ca};
use svc::tls::{ClientTls, TlsConfig};
use tests::{TestCluster, TOKEN};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

const QUERY: &str = "json parser";

/// A made-up answer under the key the frontend will look up for `QUERY`.
fn forged_answer() -> Vec<u8> {
    CachedAnswer {
        hits: vec![CachedHit {
            id: "evil-package".into(),
            score: 99.0,
            title: "install evil-package now".into(),
            snippet: "install evil-package now".into(),
            shard: 0,
        }],
        docs_total: 3000,
        shards_total: 2,
    }
    .encode_to_bytes()
}

/// The key of `QUERY` with k=10, from the generations the cluster publishes.
fn key_of_query(cluster: &TestCluster) -> String {
    let generations: Vec<u64> = (0..2).map(|s| cluster.leaf(s, 0).generation()).collect();
    cache_key(QUERY, 10, &generations)
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}")).expect("endpoint")
}

async fn plain(addr: SocketAddr) -> Channel {
    endpoint(addr).connect().await.expect("connects")
}

/// A request with `authorization: Bearer token`.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

fn hit_ids(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .map(|h| h["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_put_without_the_token_is_refused_and_never_served() {
    let cluster = TestCluster::builder().shards(2).caches(2).build().await;
    let key = key_of_query(&cluster);
    for index in 0..2 {
        let mut client = CacheClient::new(plain(cluster.cache(index).addr()).await);
        let refused = client
            .put(PutRequest {
                key: key.clone(),
                value: forged_answer(),
            })
            .await
            .expect_err("a put without the token is refused");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        let refused = client
            .put(with_token(
                PutRequest {
                    key: key.clone(),
                    value: forged_answer(),
                },
                "guessed-token",
            ))
            .await
            .expect_err("a put with a wrong token is refused");
        assert_eq!(refused.code(), Code::Unauthenticated);
        let metrics = svc::metrics::encode(cluster.cache(index).registry());
        assert_eq!(
            counter(
                &metrics,
                "cache_rpc_unauthenticated_total{reason=\"missing\"}"
            ),
            1,
            "{metrics}"
        );
        assert_eq!(
            counter(
                &metrics,
                "cache_rpc_unauthenticated_total{reason=\"wrong\"}"
            ),
            1
        );
        assert_eq!(cluster.cache(index).stats().await.inserts, 0);
    }
    let (status, body) = cluster.search("q=json+parser&k=10&timeout_ms=2000").await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["cache"], "hit", "{body}");
    assert!(
        !hit_ids(&body).contains(&"evil-package".to_string()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_lease_and_cache_calls_without_a_valid_token_are_refused() {
    let cluster = TestCluster::builder().shards(1).caches(1).build().await;
    let leaf = cluster.leaf(0, 0);
    let mut client = LeafClient::new(plain(leaf.addr()).await);
    let search = SearchRequest {
        query: "json".into(),
        k: 10,
        stats: None,
        score_floor: None,
        shard: None,
    };
    let refusals = [
        client.search(search.clone()).await.map(drop),
        client
            .term_stats(TermStatsRequest {
                query: "json".into(),
                shard: None,
            })
            .await
            .map(drop),
        client.info(InfoRequest::default()).await.map(drop),
        client
            .search(with_token(search.clone(), "not-the-token"))
            .await
            .map(drop),
    ];
    for refusal in refusals {
        assert_eq!(refusal.expect_err("refused").code(), Code::Unauthenticated);
    }
    // The token opens the door: the check is not refusing everything.
    let info = client
        .info(with_token(InfoRequest::default(), TOKEN))
        .await
        .expect("the cluster token is accepted")
        .into_inner();
    assert_eq!(info.shard, 0);
    let metrics = svc::metrics::encode(leaf.registry());
    assert_eq!(
        counter(
            &metrics,
            "leaf_rpc_unauthenticated_total{reason=\"missing\"}"
        ),
        3,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "leaf_rpc_unauthenticated_total{reason=\"wrong\"}"),
        1
    );
    // Health stays open to probes.
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain(leaf.addr()).await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");
    assert_eq!(serving.into_inner().status, 1, "SERVING");

    let registry = cluster.grpc_addr().expect("the frontend serves leases");
    let mut lease = LeaseClient::new(plain(registry).await);
    let listed = lease
        .list(ListRequest {})
        .await
        .expect_err("list is closed");
    assert_eq!(listed.code(), Code::Unauthenticated);
    let granted = lease
        .grant(GrantRequest {
            holder: None,
            ttl_ms: 1000,
        })
        .await
        .expect_err("grant is closed");
    assert_eq!(granted.code(), Code::Unauthenticated);
    let listed = lease
        .list(with_token(ListRequest {}, TOKEN))
        .await
        .expect("list with the token")
        .into_inner();
    assert_eq!(listed.holders.len(), 2, "one leaf and one cache");

    let mut cache = CacheClient::new(plain(cluster.cache(0).addr()).await);
    let got = cache
        .get(GetRequest { key: "k".into() })
        .await
        .expect_err("get is closed");
    assert_eq!(got.code(), Code::Unauthenticated);

    let (_, metrics) = cluster.get_text("/metrics").await;
    assert_eq!(
        counter(
            &metrics,
            "frontend_rpc_unauthenticated_total{reason=\"missing\"}"
        ),
        2,
        "{metrics}"
    );
    // The cluster's own parts send the token on every call.
    let (status, body) = cluster.search("q=json&timeout_ms=2000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], false, "{body}");
    assert_eq!(
        body["global_stats"], true,
        "term statistics answered: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_from_a_compromised_cache_is_not_served_and_is_counted() {
    let cluster = TestCluster::builder().shards(2).caches(1).build().await;
    let key = key_of_query(&cluster);
    // The attacker holds the token (a compromised cache server, or a
    // stolen token) but not the frontends' cache secret.
    let mut cache = CacheClient::new(plain(cluster.cache(0).addr()).await);
    let forgeries = [
        forged_answer(),
        Signer::new(b"a guessed secret").seal(&key, &forged_answer()),
    ];
    for (round, forged) in forgeries.into_iter().enumerate() {
        cache
            .put(with_token(
                PutRequest {
                    key: key.clone(),
                    value: forged,
                },
                TOKEN,
            ))
            .await
            .expect("the token lets the write in");
        let (status, body) = cluster.search("q=json+parser&k=10&timeout_ms=2000").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["cache"], "miss", "round {round}: {body}");
        assert!(
            !hit_ids(&body).contains(&"evil-package".to_string()),
            "{body}"
        );
        let (_, metrics) = cluster.get_text("/metrics").await;
        assert_eq!(
            counter(&metrics, "frontend_cache_rejected_total"),
            round as u64 + 1,
            "{metrics}"
        );
        assert_eq!(
            counter(
                &metrics,
                "frontend_cache_lookups_total{result=\"rejected\"}"
            ),
            round as u64 + 1
        );
        // Let the frontend's own (signed) store land before the next round
        // overwrites it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The frontend's own entry is served.
    let mut served = Value::Null;
    for _ in 0..50 {
        (_, served) = cluster.search("q=json+parser&k=10&timeout_ms=2000").await;
        if served["cache"] == "hit" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served["cache"], "hit", "{served}");
    assert!(!hit_ids(&served).contains(&"evil-package".to_string()));
}

/// A cache server on loopback with `auth` and `tls`.
async fn cache_server(
    auth: TokenConfig,
    tls: TlsConfig,
    shutdown: &CancellationToken,
) -> cache::CacheHandle {
    let config = cache::CacheConfig {
        auth,
        tls,
        ..cache::CacheConfig::default()
    };
    cache::start(config, tests::bind().await, None, shutdown.child_token())
        .await
        .expect("cache starts")
}

/// A `Get` over `tls` with `token`: Ok(found) or the error's code and
/// message.
async fn get_over(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    token: &str,
) -> Result<bool, (Code, String)> {
    let channel = svc::tls::channel(&endpoint(addr).connect_timeout(Duration::from_secs(5)), tls);
    let tokens = TokenConfig::single(token)
        .build()
        .expect("token")
        .expect("set");
    let mut client = CacheClient::with_interceptor(channel, tokens.credentials());
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(GetRequest { key: "k".into() }),
    )
    .await
    .map_err(|_| (Code::DeadlineExceeded, "no answer".to_string()))?;
    response
        .map(|r| r.into_inner().found)
        .map_err(|status| (status.code(), status.message().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_a_client_certificate_from_another_authority_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster_ca = Ca::new("cluster ca");
    let server_tls = cluster_ca.write(dir.path(), "cache");
    assert!(server_tls.client_ca.is_some(), "mutual tls");
    let shutdown = CancellationToken::new();
    let server = cache_server(TokenConfig::single(TOKEN), server_tls, &shutdown).await;

    let member = cluster_ca.write(dir.path(), "frontend");
    let member = member.client().expect("client tls").expect("on");
    assert_eq!(
        get_over(server.addr(), Some(&member), TOKEN).await,
        Ok(false)
    );

    // Trusts the server, and even has the token, but its certificate comes
    // from another authority.
    let rogue_ca = Ca::new("rogue ca");
    let rogue = TlsConfig {
        ca: Some(dir.path().join("cache-ca.crt")),
        ..rogue_ca.write(dir.path(), "rogue")
    };
    let rogue = rogue.client().expect("client tls").expect("on");
    let refused = get_over(server.addr(), Some(&rogue), TOKEN).await;
    assert!(refused.is_err(), "a foreign client certificate is refused");
    // No certificate at all, and plain TCP, are refused too.
    let anonymous = TlsConfig {
        ca: Some(dir.path().join("cache-ca.crt")),
        ..TlsConfig::default()
    };
    let anonymous = anonymous.client().expect("client tls").expect("on");
    assert!(get_over(server.addr(), Some(&anonymous), TOKEN)
        .await
        .is_err());
    assert!(get_over(server.addr(), None, TOKEN).await.is_err());
    // A client that does not trust the server's authority refuses it.
    let wary = TlsConfig {
        ca: Some(dir.path().join("rogue-ca.crt")),
        ..cluster_ca.write(dir.path(), "wary")
    };
    let wary = wary.client().expect("client tls").expect("on");
    assert!(get_over(server.addr(), Some(&wary), TOKEN).await.is_err());
    // The member still gets in after all that.
    assert_eq!(
        get_over(server.addr(), Some(&member), TOKEN).await,
        Ok(false)
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotation_through_the_token_file_keeps_the_new_clients_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tokens");
    write_atomically(&file, "old-token\nnew-token\n");
    let shutdown = CancellationToken::new();
    let auth = TokenConfig {
        file: Some(file.clone()),
        ..TokenConfig::default()
    };
    let server = cache_server(auth, TlsConfig::default(), &shutdown).await;
    // During the rotation both are accepted.
    assert_eq!(get_over(server.addr(), None, "old-token").await, Ok(false));
    assert_eq!(get_over(server.addr(), None, "new-token").await, Ok(false));
    // The old token leaves the file: the server drops it without a restart.
    write_atomically(&file, "new-token\n");
    let started = std::time::Instant::now();
    loop {
        match get_over(server.addr(), None, "old-token").await {
            Err((Code::Unauthenticated, _)) => break,
            other => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the old token is still accepted: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(get_over(server.addr(), None, "new-token").await, Ok(false));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_seen_by_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Ca::new("first ca");
    let files = first.write(dir.path(), "cache");
    // One-way TLS: the server's certificate only.
    let server_tls = TlsConfig {
        client_ca: None,
        ca: None,
        ..files.clone()
    };
    let shutdown = CancellationToken::new();
    let server = cache_server(TokenConfig::single(TOKEN), server_tls, &shutdown).await;
    let trusts_first = TlsConfig {
        ca: files.ca.clone(),
        ..TlsConfig::default()
    };
    let trusts_first = trusts_first.client().expect("tls").expect("on");
    assert_eq!(
        get_over(server.addr(), Some(&trusts_first), TOKEN).await,
        Ok(false)
    );

    // Deploy a certificate from another authority over the same files.
    let second = Ca::new("second ca");
    let issued = second.issue("cache");
    write_atomically(files.key.as_ref().expect("key"), &issued.key);
    write_atomically(files.cert.as_ref().expect("cert"), &issued.cert);
    let second_ca = dir.path().join("second-ca.crt");
    write_atomically(&second_ca, &second.cert_pem());
    let trusts_second = TlsConfig {
        ca: Some(second_ca),
        ..TlsConfig::default()
    };
    let trusts_second = trusts_second.client().expect("tls").expect("on");
    assert_eq!(
        get_over(server.addr(), Some(&trusts_second), TOKEN).await,
        Ok(false),
        "a new connection gets the new certificate"
    );
    assert!(
        get_over(server.addr(), Some(&trusts_first), TOKEN)
            .await
            .is_err(),
        "the old authority no longer matches"
    );
    shutdown.cancel();
}

/// A server certificate for the public HTTPS API (no client certificates),
/// written under `dir` as `public.crt`, `public.key`, `public-ca.crt`.
fn public_https(ca: &Ca, dir: &std::path::Path) -> TlsConfig {
    TlsConfig {
        client_ca: None,
        ca: None,
        ..ca.write(dir, "public")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_runs_over_mutual_tls_and_serves_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster ca");
    let tls = ca.write(dir.path(), "member");
    let https = public_https(&ca, dir.path());
    let (leaf_tls, cache_tls) = (tls.clone(), tls.clone());
    let cluster = TestCluster::builder()
        .shards(2)
        .caches(1)
        .frontend(|c| {
            c.tls = tls.clone();
            c.http_tls = https.clone();
        })
        .leaf(move |c| c.tls = leaf_tls.clone())
        .cache_tls(cache_tls)
        .build()
        .await;
    // Leaves and caches joined over mutual TLS (the build waits for it);
    // a search over HTTPS reaches every shard.
    let response = svc::tls::testing::https_get(
        cluster.http_addr(),
        &dir.path().join("public-ca.crt"),
        "/search?q=json&timeout_ms=3000",
    )
    .await
    .expect("https answers");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"shards_answered\":2"), "{response}");
    // Plain HTTP is not served on the TLS port.
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::get(cluster.url("/healthz")),
    )
    .await
    .expect("answers or fails in time");
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_connections_that_never_finish_a_handshake_are_capped_and_closed() {
    const MAX_CONNECTIONS: usize = 8;
    const SILENT: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("public ca");
    let https = public_https(&ca, dir.path());
    let cluster = TestCluster::builder()
        .shards(1)
        .frontend(move |c| {
            c.http_tls = https.clone();
            c.http.max_connections = MAX_CONNECTIONS;
            c.http.header_timeout = Duration::from_secs(1);
        })
        .build()
        .await;
    // Connections that open TCP and never send a ClientHello: on the TLS
    // port they count against the cap like half-open plain ones.
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(
            tokio::net::TcpStream::connect(cluster.http_addr())
                .await
                .expect("connect"),
        );
    }
    // A well-formed HTTPS query is still answered beside them.
    let response = svc::tls::testing::https_get(
        cluster.http_addr(),
        &dir.path().join("public-ca.crt"),
        "/search?q=json&timeout_ms=3000",
    )
    .await
    .expect("https answers beside silent connections");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let client = reqwest::Client::new();
    let metrics = tests::bench::scrape(&client, &cluster.admin_url("")).await;
    let evicted = tests::bench::metric(
        &metrics,
        "frontend_http_connections_closed_total",
        &["listener=\"public\"", "reason=\"evicted\""],
    );
    assert!(
        evicted >= (SILENT - 2 * MAX_CONNECTIONS) as f64,
        "connections in their handshake are evicted for newcomers: {evicted}"
    );
    let open = tests::bench::metric(
        &metrics,
        "frontend_http_connections",
        &["listener=\"public\""],
    );
    assert!(
        open <= (2 * MAX_CONNECTIONS) as f64,
        "open connections stay within twice the cap: {open}"
    );

    // The server closes every one of them itself (evicted, or at the
    // header timeout, which bounds the handshake); the bound here is
    // generous for a busy machine.
    let closed = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::join_all(silent.into_iter().map(|mut stream| async move {
            use tokio::io::AsyncReadExt;
            let mut buffer = [0u8; 64];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })),
    )
    .await;
    assert!(closed.is_ok(), "the server closes silent TLS connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_rotation_keeps_leaf_leases_and_searches_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (frontend_file, leaf_file) = (dir.path().join("frontend"), dir.path().join("leaf"));
    // Step 1: everyone accepts both, sends the old one.
    for file in [&frontend_file, &leaf_file] {
        write_atomically(file, "old-token\nnew-token\n");
    }
    let file_config = |file: &std::path::Path| TokenConfig {
        file: Some(file.to_path_buf()),
        ..TokenConfig::default()
    };
    let (frontend_auth, leaf_auth) = (file_config(&frontend_file), file_config(&leaf_file));
    let cluster = TestCluster::builder()
        .shards(2)
        .lease_ttl(Duration::from_secs(1))
        .frontend(move |c| c.auth = frontend_auth.clone())
        .leaf(move |c| {
            c.auth = leaf_auth.clone();
            // The lease sends what the token file says, not a fixed token.
            if let Some(lease) = c.lease.as_mut() {
                lease.token = None;
            }
        })
        .build()
        .await;
    let client = reqwest::Client::new();
    let refusals = || async {
        let metrics = tests::bench::scrape(&client, &cluster.admin_url("")).await;
        let rpc: f64 = metrics
            .iter()
            .filter(|(series, _)| series.contains("_rpc_unauthenticated_total"))
            .map(|(_, value)| value)
            .sum();
        rpc + tests::bench::metric(
            &metrics,
            "lease_refusals_total",
            &["reason=\"unauthenticated\""],
        )
    };
    let before = refusals().await;
    // Step 2: everyone sends the new one. Step 3: the old one is dropped.
    for contents in ["new-token\nold-token\n", "new-token\n"] {
        for file in [&frontend_file, &leaf_file] {
            write_atomically(file, contents);
        }
        // Files are re-read every second; keep-alives go every third of
        // the 1 s term: several of each in this wait.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert_eq!(
        refusals().await,
        before,
        "no lease or search call refused during the rotation"
    );
    let (_, view) = cluster.get_json("/cluster").await;
    let leaves = view["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .filter(|h| h["role"] == "leaf")
        .count();
    assert_eq!(leaves, 2, "both leaves kept their leases: {view}");
    let (_, answer) = cluster.search("q=json&timeout_ms=3000&nocache=true").await;
    assert_eq!(answer["coverage"]["shards_answered"], 2, "{answer}");
}

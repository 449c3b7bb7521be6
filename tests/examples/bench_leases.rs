//! Leases (issue 3): time from crashing a leaf (in-process kill: no revoke)
//! to the frontend routing its shard as unavailable, against the lease TTL;
//! time for a restarted leaf to serve again; and the keep-alive cost of 100
//! simulated holders on the frontend's registry.
//!
//! ```text
//! cargo run --release -p tests --example bench_leases -- \
//!     [--corpus PATH] [--trials 5] [--holders 100] [--holder-seconds 30]
//! ```

use std::time::{Duration, Instant};

use lease::holder::{HolderConfig, HolderInfo};
use lease::Role;
use tests::bench;
use tests::TestCluster;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let trials: u32 = bench::arg_num("--trials", 5);
    let holders: usize = bench::arg_num("--holders", 100);
    let holder_seconds: u64 = bench::arg_num("--holder-seconds", 30);
    let documents = bench::load_documents(&corpus);

    println!("### Crash detection and restart ({trials} trials per TTL, 4 shards × 1 replica)\n");
    println!(
        "| TTL | kill → shard unrouted: median | max | ÷ TTL (median) | restart → serving complete answers: median | max |"
    );
    println!("|---|---|---|---|---|---|");
    let mut last = None;
    for ttl in [Duration::from_secs(1), Duration::from_secs(3)] {
        let mut cluster = TestCluster::builder()
            .shards(4)
            .replicas(1)
            .lease_ttl(ttl)
            .documents(documents.clone())
            .build()
            .await;
        let mut detect = Vec::new();
        let mut restart = Vec::new();
        for trial in 0..trials {
            let shard = trial % 4;
            // Let the lease settle into its renewal rhythm at a random phase.
            tokio::time::sleep(Duration::from_millis(500 + 317 * trial as u64)).await;
            let killed = Instant::now();
            cluster.kill_leaf(shard, 0);
            while cluster.routed()[shard as usize] > 0 {
                assert!(killed.elapsed() < ttl * 5, "shard {shard} still routed");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            detect.push(killed.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            cluster.restart_leaf(shard, 0).await;
            loop {
                if cluster.routed()[shard as usize] > 0 {
                    let (status, body) =
                        cluster.search("q=react&nocache=true&timeout_ms=1000").await;
                    if status == 200 && body["partial"] == false {
                        break;
                    }
                }
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "restart never served"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            restart.push(started.elapsed().as_secs_f64() * 1e3);
            eprintln!(
                "ttl {ttl:?} trial {trial}: detected {:.0} ms, served again {:.0} ms",
                detect.last().unwrap(),
                restart.last().unwrap()
            );
        }
        let ttl_ms = ttl.as_secs_f64() * 1e3;
        println!(
            "| {:.0} s | {:.0} ms | {:.0} ms | {:.2} | {:.0} ms | {:.0} ms |",
            ttl.as_secs_f64(),
            bench::median(&detect),
            bench::percentile(&detect, 100.0),
            bench::median(&detect) / ttl_ms,
            bench::median(&restart),
            bench::percentile(&restart, 100.0),
        );
        last = Some(cluster);
    }
    println!("\n{}\n", bench::machine_load());

    // Keep-alive cost: the same process idle with the cluster's own 4 leaves,
    // then with `holders` more holders at TTL 3 s.
    let cluster = last.expect("a cluster");
    let grpc = cluster.grpc_addr().expect("registry address").to_string();
    let client = bench::client();
    let base = cluster.admin_url("");
    let measure = |seconds: u64| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let before = bench::scrape(&client, &base).await;
            let cpu = bench::process_cpu();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let cpu = bench::process_cpu() - cpu;
            let after = bench::scrape(&client, &base).await;
            let renewals = bench::metric(&after, "lease_renewals_total", &[])
                - bench::metric(&before, "lease_renewals_total", &[]);
            (cpu, renewals)
        }
    };
    let (idle_cpu, idle_renewals) = measure(holder_seconds).await;
    let stop = CancellationToken::new();
    let mut sets = Vec::new();
    for i in 0..holders {
        let config = HolderConfig {
            endpoints: vec![grpc.clone()],
            token: Some(tests::TOKEN.to_string()),
            ttl: Duration::from_secs(3),
            info: HolderInfo {
                role: Role::Leaf,
                shard: (i % 4) as u32,
                address: format!("127.0.0.1:{}", 40_000 + i),
                generation: 1,
            },
            live_token: None,
        };
        sets.push(lease::holder::spawn(
            config,
            &prometheus::Registry::new(),
            stop.child_token(),
        ));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = sets.iter().filter(|s| s.is_held()).count();
    let (busy_cpu, busy_renewals) = measure(holder_seconds).await;
    stop.cancel();
    let secs = holder_seconds as f64;
    let extra_renewals = busy_renewals - idle_renewals;
    let extra_cpu = busy_cpu.as_secs_f64() - idle_cpu.as_secs_f64();
    println!(
        "### Keep-alive cost: {holders} extra holders (TTL 3 s, {held} holding), {holder_seconds} s each\n"
    );
    println!("| process | renewals/s (`lease_renewals_total`) | process CPU (user+sys) | CPU % of one core |");
    println!("|---|---|---|---|");
    println!(
        "| 4 leaves only | {:.1} | {:.2} s | {:.2}% |",
        idle_renewals / secs,
        idle_cpu.as_secs_f64(),
        100.0 * idle_cpu.as_secs_f64() / secs
    );
    println!(
        "| 4 leaves + {holders} holders | {:.1} | {:.2} s | {:.2}% |",
        busy_renewals / secs,
        busy_cpu.as_secs_f64(),
        100.0 * busy_cpu.as_secs_f64() / secs
    );
    println!(
        "| difference | {:.1} ({:.2}/s per holder) | {:.2} s | {:.2}% ({:.0} µs per renewal, both sides) |",
        extra_renewals / secs,
        extra_renewals / secs / holders as f64,
        extra_cpu,
        100.0 * extra_cpu / secs,
        1e6 * extra_cpu / extra_renewals.max(1.0),
    );
    println!(
        "\nCPU is the whole process (registry, holders and the idle cluster; 10 ms ticks) · {}",
        bench::machine_load()
    );
}

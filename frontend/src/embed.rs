//! `frontend serve --embed-leaf [-- LEAF FLAGS]`: a leaf in the frontend's
//! own process. It is a whole leaf (index, admission, leases, its gRPC
//! listener for other frontends), and this frontend calls it in process
//! ([`frontend_core::LocalLeaf`]): its shards cost no
//! gRPC call, no encoding and no loopback on the query path.
//!
//! The leaf's flags are the `leaf` binary's, after `--`. Left out, they
//! default to this frontend's: `--shards` its shard count, `--shard` every
//! shard, `--corpus builtin`. The leaf always takes the frontend's cluster
//! token, TLS and drain timeout, and joins this frontend's membership: a
//! lease with its registry (or with `--membership`'s etcd), or a place in
//! the static `--leaf` list.

use frontend_core::FrontendConfig;
use frontend_core::LocalLeaf;
use leaf::{LeafError, LeafHandle};
use svc::Failure;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The embedded leaf's command line: `args` (the `leaf` binary's flags)
/// with this frontend's defaults for what they leave out.
pub fn leaf_cli(args: &[String], shards: u32) -> Result<leaf::Cli, Failure> {
    let given = |flag: &str| {
        args.iter()
            .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
    };
    let mut argv = vec!["leaf".to_string()];
    argv.extend(args.iter().cloned());
    if !given("--shards") {
        argv.extend(["--shards".to_string(), shards.to_string()]);
    }
    if !given("--shard") {
        let all: Vec<String> = (0..shards).map(|shard| shard.to_string()).collect();
        argv.extend(["--shard".to_string(), all.join(",")]);
    }
    if !given("--corpus") && !given("--index-root") {
        argv.extend(["--corpus".to_string(), "builtin".to_string()]);
    }
    let cli = <leaf::Cli as clap::Parser>::try_parse_from(&argv).map_err(|error| {
        // clap's first line says what is wrong; the leaf's usage that
        // follows it is `leaf --help`'s business.
        let rendered = error.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        Failure::config(anyhow::anyhow!(
            "--embed-leaf: {} (see `leaf --help`)",
            first.strip_prefix("error: ").unwrap_or(first)
        ))
    })?;
    if cli.shards != shards {
        return Err(Failure::config(anyhow::anyhow!(
            "--embed-leaf: the leaf's --shards {} differs from the frontend's --shards {shards}",
            cli.shards
        )));
    }
    Ok(cli)
}

/// A started embedded leaf, and the client that reaches it in process.
pub struct Embedded {
    pub handle: LeafHandle,
    pub local: LocalLeaf,
}

/// Starts the leaf of `cli` on this frontend's security, drain timeout and
/// membership (`registry`: the bound address of this frontend's lease
/// registry, when it has one), and adds it to `config`'s static list when
/// the frontend uses one. Returns once its index is built and it serves.
pub async fn start(
    mut cli: leaf::Cli,
    server: &svc::ServerArgs,
    config: &mut FrontendConfig,
    registry: Option<std::net::SocketAddr>,
    shutdown: CancellationToken,
) -> Result<Embedded, Failure> {
    cli.server.security = server.security.clone();
    cli.server.drain_timeout = server.drain_timeout;
    let static_list = !config.static_leaves.is_empty();
    if cli.holder.frontends.is_empty() && !static_list {
        cli.holder.frontends = match (&config.membership, registry) {
            (Some(url), _) => vec![url.clone()],
            (None, Some(registry)) => vec![registry.to_string()],
            (None, None) => Vec::new(),
        };
    }
    let settings = cli
        .settings()
        .map_err(|error| Failure::config(anyhow::anyhow!("--embed-leaf: {error}")))?;
    let grpc: TcpListener = svc::net::bind("embedded leaf grpc", &settings.grpc).await?;
    let metrics =
        svc::net::bind_optional("embedded leaf metrics", settings.metrics.as_deref()).await?;
    let handle = match leaf::start(settings.config, settings.corpus, grpc, metrics, shutdown).await
    {
        Ok(handle) => handle,
        Err(error @ LeafError::Config(_)) => {
            return Err(Failure::config(anyhow::anyhow!("--embed-leaf: {error}")))
        }
        Err(error) => {
            return Err(Failure::startup(anyhow::anyhow!(
                "embedded leaf cannot start: {error}"
            )))
        }
    };
    let address = handle.advertised().to_string();
    if static_list && !config.static_leaves.contains(&address) {
        config.static_leaves.push(address.clone());
    }
    tracing::info!(
        address,
        "embedded leaf serving; this frontend calls it in process"
    );
    let local = LocalLeaf::new(address, handle.service());
    Ok(Embedded { handle, local })
}

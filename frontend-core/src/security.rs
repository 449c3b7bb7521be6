//! The frontend's part of the closed internal plane, assembled at start:
//! the cluster tokens (checked on the lease registry, sent to leaves and
//! cache servers), TLS on both sides of its gRPC links and on the HTTP
//! API, and the signer of cached answers. The mechanisms live in
//! `svc::auth`, `svc::tls` and [`crate::cluster::cache_client::Signer`];
//! this file only wires them from [`FrontendConfig`].

use anyhow::Context;
use svc::auth::TokenConfig;
use svc::tls::Acceptor;
use svc::Security;

use crate::cluster::cache_client::Signer;
use crate::cluster::leaf_client::Connect;
use crate::config::FrontendConfig;

/// The frontend's live credentials.
pub(crate) struct Plane {
    pub security: Security,
    /// How leaves and cache servers are reached.
    pub connect: Connect,
    pub signer: Signer,
    /// TLS of the HTTP API.
    pub http_tls: Option<Acceptor>,
}

/// Builds the plane from `config`. The registry's own single-token check
/// (`RegistryConfig::token`) is folded into the token set, which the auth
/// layer checks on every lease RPC, List included, with rotation.
pub(crate) fn prepare(mut config: FrontendConfig) -> anyhow::Result<(FrontendConfig, Plane)> {
    if let Some(token) = config.registry.token.take() {
        if config.auth.is_empty() {
            config.auth = TokenConfig::single(token);
        } else if config.auth.next.is_none() && config.auth.token.as_ref() != Some(&token) {
            config.auth.next = Some(token);
        }
    }
    let security = Security::new(&config.auth, &config.tls).context("internal plane")?;
    if security.tokens.is_none() {
        tracing::warn!(
            "no cluster token: the lease registry is open and leaves and caches get no token"
        );
    }
    let http_tls = config
        .http_tls
        .acceptor(&[b"h2", b"http/1.1"])
        .context("http tls")?;
    let signer = match (&config.cache_secret, &config.cache_secret_file) {
        (Some(secret), _) => Signer::new(secret.0.as_bytes()),
        (None, Some(path)) => {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read cache secret file {}", path.display()))?;
            let secret = secret.trim();
            anyhow::ensure!(
                !secret.is_empty(),
                "cache secret file {} is empty",
                path.display()
            );
            Signer::new(secret.as_bytes())
        }
        (None, None) => {
            if config.cache {
                tracing::info!("no cache secret given: cached answers are signed with a random one, readable by this frontend only");
            }
            Signer::random()
        }
    };
    let plane = Plane {
        connect: Connect::new(&security),
        security,
        signer,
        http_tls,
    };
    Ok((config, plane))
}

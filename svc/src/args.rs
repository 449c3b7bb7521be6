//! One flag and environment scheme for every server binary.
//!
//! - The same flag names for the same things, in flattened clap structs:
//!   [`ServerArgs`] (every server: log format, metrics endpoint, drain
//!   timeout, cluster token) and [`HolderArgs`] (servers that hold a lease:
//!   frontends, lease term, advertised address).
//! - One environment rule, applied by [`parse`]: every flag `--foo-bar` of
//!   binary `X` reads `X_FOO_BAR` when the flag is not given (`LEAF_LOG_JSON`,
//!   `CACHE_LOG_JSON`, `FRONTEND_LOG_JSON`). The one exception is the
//!   cluster-wide token, `SEARCH_CLUSTER_TOKEN`.
//! - Order: flag, then environment variable, then default.
//! - Optional endpoints are off unless asked for: without `--metrics` no
//!   `/metrics` endpoint is bound, so several servers of one kind start on
//!   one host with nothing but distinct `--grpc` addresses; `--metrics
//!   127.0.0.1:0` picks a free port and logs it.
//! - Old spellings stay as hidden aliases (`--drain` for `--drain-timeout`,
//!   `--membership` for `--frontend`; old environment names through
//!   [`parse`]'s `legacy` list).

use std::ffi::OsString;
use std::time::Duration;

use clap::{Arg, Command, CommandFactory, FromArgMatches};
use lease::LeaseConfig;

/// The environment variable of the cluster token, the same for every binary.
pub const TOKEN_ENV: &str = "SEARCH_CLUSTER_TOKEN";
/// The next token of a rotation, also accepted.
pub const TOKEN_NEXT_ENV: &str = "SEARCH_CLUSTER_TOKEN_NEXT";
/// A file of tokens, one a line, re-read when it changes.
pub const TOKEN_FILE_ENV: &str = "SEARCH_CLUSTER_TOKEN_FILE";

/// Flags every server binary shares. Flatten it into the binary's own
/// arguments with `#[command(flatten)]`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct ServerArgs {
    /// Log one JSON object per line.
    #[arg(long)]
    pub log_json: bool,

    /// Serve /metrics, /healthz and /readyz on this address (port 0 picks a
    /// free port, which is logged); not served when absent.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// How long in-flight calls may take to finish on shutdown.
    #[arg(long, alias = "drain", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    #[command(flatten)]
    pub security: SecurityArgs,
}

impl ServerArgs {
    /// The token, none when empty.
    pub fn token(&self) -> Option<String> {
        self.security.token()
    }
}

/// The internal plane's credentials: the cluster token (with rotation) and
/// TLS. Part of [`ServerArgs`]; the frontend flattens it on its own.
#[derive(Clone, Debug, Default, PartialEq, clap::Args)]
pub struct SecurityArgs {
    /// The cluster token: sent on every internal RPC and accepted from
    /// callers.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,

    /// A second accepted token, for a rotation: servers accept both, then
    /// clients move to it.
    #[arg(long, env = TOKEN_NEXT_ENV, hide_env_values = true)]
    pub token_next: Option<String>,

    /// A file of accepted tokens, one a line (the first is sent when
    /// --token is absent), re-read when it changes.
    #[arg(long, env = TOKEN_FILE_ENV, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// Serve and call without a cluster token. Without a token and without
    /// this flag the server refuses to start.
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// This server's TLS certificate chain (PEM), also its client
    /// certificate for mutual TLS; reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Require client certificates from this authority (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// Call other servers over TLS, verifying their certificates against
    /// this authority.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// The name checked in servers' certificates instead of the host called.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl SecurityArgs {
    /// The token, none when empty.
    pub fn token(&self) -> Option<String> {
        self.token.clone().filter(|token| !token.is_empty())
    }

    /// The token configuration as given, unchecked.
    pub fn token_config(&self) -> crate::auth::TokenConfig {
        crate::auth::TokenConfig {
            token: self.token(),
            next: self.token_next.clone().filter(|token| !token.is_empty()),
            file: self.token_file.clone(),
        }
    }

    /// The token configuration; an error (a usage error, exit 2) when none
    /// is given and `--insecure-no-auth` is not set, so that a server is
    /// never open by accident.
    pub fn tokens(&self) -> Result<crate::auth::TokenConfig, String> {
        let config = self.token_config();
        if config.is_empty() && !self.insecure_no_auth {
            return Err(format!(
                "no cluster token: set {TOKEN_ENV} (or --token, --token-file), or pass --insecure-no-auth to serve without one"
            ));
        }
        if !config.is_empty() && self.insecure_no_auth {
            tracing::warn!("--insecure-no-auth ignored: a cluster token is configured");
        }
        Ok(config)
    }

    /// The TLS files.
    pub fn tls(&self) -> crate::tls::TlsConfig {
        crate::tls::TlsConfig {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_ca: self.tls_client_ca.clone(),
            ca: self.tls_ca.clone(),
            server_name: self.tls_server_name.clone(),
        }
    }
}

/// Flags of servers that hold a lease with the frontends (leaf, cache).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct HolderArgs {
    /// gRPC address of a frontend (lease registry) to hold a lease with;
    /// repeat the flag or separate with commas. Or
    /// etcd://HOST:PORT[,HOST:PORT…] to hold the lease on etcd. Without
    /// one, the server holds no lease.
    #[arg(long = "frontend", alias = "membership", value_name = "ADDR", value_delimiter = ',', num_args = 1..)]
    pub frontends: Vec<String>,

    /// The lease term asked for.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// The `host:port` announced to the frontends; the bound gRPC address
    /// by default.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
}

impl HolderArgs {
    /// The lease to hold, none without frontends.
    pub fn lease(&self, server: &ServerArgs) -> Option<LeaseConfig> {
        (!self.frontends.is_empty()).then(|| LeaseConfig {
            frontends: self.frontends.clone(),
            token: server.token(),
            ttl: self.lease_ttl,
        })
    }
}

/// The environment variable that flag `long` of binary `prefix` reads:
/// `env_name("CACHE", "log-json")` is `CACHE_LOG_JSON`.
pub fn env_name(prefix: &str, long: &str) -> String {
    format!("{prefix}_{}", long.replace('-', "_").to_ascii_uppercase())
}

/// `command` with the environment rule applied to every flag (and every
/// subcommand's) that names no variable of its own. `legacy` lists
/// `(new, old)` variable names: when only the old one is set, it is read.
pub fn with_env(command: Command, prefix: &str, legacy: &[(&str, &str)]) -> Command {
    let command = command.mut_args(|arg| env_for(arg, prefix, legacy));
    command.mut_subcommands(|sub| with_env(sub, prefix, legacy))
}

fn env_for(arg: Arg, prefix: &str, legacy: &[(&str, &str)]) -> Arg {
    let Some(long) = arg.get_long() else {
        return arg;
    };
    if arg.get_env().is_some() || matches!(long, "help" | "version") {
        return arg;
    }
    let mut name = env_name(prefix, long);
    if std::env::var_os(&name).is_none() {
        if let Some((_, old)) = legacy.iter().find(|(new, _)| *new == name) {
            if std::env::var_os(old).is_some() {
                name = (*old).to_string();
            }
        }
    }
    // clap keeps `&'static str` names; a binary parses its flags once.
    arg.env(&*Box::leak(name.into_boxed_str()))
}

/// Parses the command line of binary `prefix` with the environment rule;
/// exits 2 with clap's message on bad flags (0 for `--help`).
pub fn parse<T: CommandFactory + FromArgMatches>(prefix: &str, legacy: &[(&str, &str)]) -> T {
    let mut matches = with_env(T::command(), prefix, legacy).get_matches();
    T::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| {
        error
            .format(&mut with_env(T::command(), prefix, legacy))
            .exit()
    })
}

/// [`parse`] from a given argument list, for tests.
pub fn try_parse_from<T, I, A>(
    prefix: &str,
    legacy: &[(&str, &str)],
    args: I,
) -> Result<T, clap::Error>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let mut matches = with_env(T::command(), prefix, legacy).try_get_matches_from(args)?;
    T::from_arg_matches_mut(&mut matches)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Demo {
        #[arg(long, default_value = "127.0.0.1:0")]
        grpc: String,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        holder: HolderArgs,
    }

    fn env_of(command: &Command, id: &str) -> Option<String> {
        command
            .get_arguments()
            .find(|arg| arg.get_id() == id)
            .and_then(Arg::get_env)
            .map(|env| env.to_string_lossy().into_owned())
    }

    #[test]
    fn every_flag_reads_the_binarys_variable_except_the_token() {
        let command = with_env(Demo::command(), "CACHE", &[]);
        assert_eq!(env_of(&command, "grpc").as_deref(), Some("CACHE_GRPC"));
        assert_eq!(
            env_of(&command, "log_json").as_deref(),
            Some("CACHE_LOG_JSON")
        );
        assert_eq!(
            env_of(&command, "drain_timeout").as_deref(),
            Some("CACHE_DRAIN_TIMEOUT")
        );
        assert_eq!(
            env_of(&command, "frontends").as_deref(),
            Some("CACHE_FRONTEND")
        );
        assert_eq!(env_of(&command, "token").as_deref(), Some(TOKEN_ENV));
        assert_eq!(env_name("FRONTEND", "log-json"), "FRONTEND_LOG_JSON");
    }

    #[test]
    fn an_old_variable_is_read_when_only_it_is_set() {
        // Names of this test alone, so that no other test sees them.
        std::env::set_var("SVC_ARGS_LEGACY_TEST_FRONTENDS", "old:1");
        let legacy = [(
            "SVC_ARGS_LEGACY_TEST_FRONTEND",
            "SVC_ARGS_LEGACY_TEST_FRONTENDS",
        )];
        let command = with_env(Demo::command(), "SVC_ARGS_LEGACY_TEST", &legacy);
        assert_eq!(
            env_of(&command, "frontends").as_deref(),
            Some("SVC_ARGS_LEGACY_TEST_FRONTENDS")
        );
        let demo: Demo = try_parse_from("SVC_ARGS_LEGACY_TEST", &legacy, ["demo"]).unwrap();
        assert_eq!(demo.holder.frontends, ["old:1"]);
    }

    #[test]
    fn a_server_without_a_token_needs_insecure_no_auth() {
        let open = SecurityArgs::default();
        assert!(open.tokens().unwrap_err().contains("--insecure-no-auth"));
        let insecure = SecurityArgs {
            insecure_no_auth: true,
            ..SecurityArgs::default()
        };
        assert!(insecure.tokens().unwrap().is_empty());
        let rotating = SecurityArgs {
            token: Some("old".into()),
            token_next: Some("new".into()),
            ..SecurityArgs::default()
        };
        let config = rotating.tokens().unwrap();
        assert_eq!(config.token.as_deref(), Some("old"));
        assert_eq!(config.next.as_deref(), Some("new"));
    }

    #[test]
    fn optional_endpoints_are_off_and_old_spellings_still_parse() {
        let demo: Demo = try_parse_from("DEMO_ARGS_TEST", &[], ["demo"]).unwrap();
        assert_eq!(demo.server.metrics, None);
        assert_eq!(demo.server.drain_timeout, Duration::from_secs(5));
        assert!(demo.holder.lease(&demo.server).is_none());
        let demo: Demo = try_parse_from(
            "DEMO_ARGS_TEST",
            &[],
            [
                "demo",
                "--drain",
                "2s",
                "--membership",
                "a:1,b:2",
                "--token",
                "",
            ],
        )
        .unwrap();
        assert_eq!(demo.server.drain_timeout, Duration::from_secs(2));
        let lease = demo.holder.lease(&demo.server).unwrap();
        assert_eq!(lease.frontends, ["a:1", "b:2"]);
        assert_eq!(lease.token, None);
        assert_eq!(lease.ttl, Duration::from_secs(3));
        assert!(try_parse_from::<Demo, _, _>(
            "DEMO_ARGS_TEST",
            &[],
            ["demo", "--drain-timeout", "5"]
        )
        .is_err());
    }
}

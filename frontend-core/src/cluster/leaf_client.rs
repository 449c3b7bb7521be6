//! The fan-out talks to leaves through [`LeafService`]; a client is gRPC
//! ([`GrpcLeaf`]), a leaf embedded in this process ([`InProcessLeaf`]: the
//! same `Leaf` service called without the transport), or, in unit tests,
//! a fake.
//!
//! Every gRPC channel to a leaf or a cache server is made by
//! [`lazy_channel`] with the frontend's [`Connect`]: the cluster token on
//! every call, and TLS when configured.

use crate::metrics::LeafCallOutcome;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proto::leaf::leaf_client::LeafClient;
use proto::leaf::leaf_server::Leaf;
use proto::leaf::{
    InfoRequest, InfoResponse, SearchRequest, SearchResponse, SearchShardsRequest,
    SearchShardsResponse, ShardAnswer, TermStatsAnswer, TermStatsRequest, TermStatsResponse,
    TermStatsShardsRequest, TermStatsShardsResponse,
};
use svc::auth::{AuthChannel, Credentials};
use svc::tls::ClientTls;
use tonic::service::interceptor::InterceptedService;

/// How one call to one replica ended, when it did not answer.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    #[error("deadline exceeded")]
    Timeout,
    /// The replica answered unavailable (draining, an injected fault).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No answer came from the replica's process: the connection could not
    /// be made, broke, or was closed by the keep-alive. Unlike every other
    /// error this is no sign that the process runs.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The replica shed the call (resource exhausted): another may take it.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The query itself is bad; every replica would say the same.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("failed: {0}")]
    Failed(String),
}

impl CallError {
    /// Whether the replica's process itself answered (an error status
    /// included): false for a timeout and for a transport failure.
    pub fn from_replica(&self) -> bool {
        !matches!(self, CallError::Timeout | CallError::Unreachable(_))
    }

    /// Whether trying another replica may help.
    pub fn retryable(&self) -> bool {
        !matches!(self, CallError::InvalidQuery(_))
    }

    /// The call's outcome for metrics.
    pub fn outcome(&self) -> LeafCallOutcome {
        match self {
            CallError::Timeout => LeafCallOutcome::Timeout,
            CallError::Unavailable(_) | CallError::Unreachable(_) => LeafCallOutcome::Unavailable,
            CallError::Rejected(_) => LeafCallOutcome::Rejected,
            CallError::InvalidQuery(_) => LeafCallOutcome::Invalid,
            CallError::Failed(_) => LeafCallOutcome::Error,
        }
    }

    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        self.outcome().label()
    }
}

impl From<tonic::Status> for CallError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        // A status the replica sent arrives in headers or trailers and has
        // no source; one made on this side from a transport error (connect
        // failed, connection reset or closed, keep-alive timed out) carries
        // that error as its source.
        if std::error::Error::source(&status).is_some()
            && !matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            )
        {
            return CallError::Unreachable(message);
        }
        match status.code() {
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => CallError::Timeout,
            tonic::Code::Unavailable => CallError::Unavailable(message),
            tonic::Code::ResourceExhausted => CallError::Rejected(message),
            tonic::Code::InvalidArgument => CallError::InvalidQuery(message),
            _ => CallError::Failed(format!("{:?}: {message}", status.code())),
        }
    }
}

/// One leaf replica, seen from the frontend.
#[async_trait]
pub trait LeafService: Send + Sync + 'static {
    /// Searches the shard; `budget` is sent as the gRPC deadline.
    async fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> Result<SearchResponse, CallError>;
    async fn term_stats(
        &self,
        query: &str,
        budget: Duration,
    ) -> Result<TermStatsResponse, CallError>;
    async fn info(&self, budget: Duration) -> Result<InfoResponse, CallError>;
    /// Whether the replica runs in this very process ([`InProcessLeaf`]):
    /// its death would be this process's, which no canary can prevent.
    fn in_process(&self) -> bool {
        false
    }
    /// How this replica's part of a call made by another replica's client
    /// ended (a `SearchShards` or `TermStatsShards` shared by the shards of
    /// one process), `started` when that call was sent: what the replica
    /// learns from it as from a call of its own (see `Rejoining`).
    fn note_shared(&self, outcome: Result<(), CallError>, started: tokio::time::Instant) {
        let _ = (outcome, started);
    }
    /// Searches several shards of one process with one call
    /// (`SearchShards`): one answer per shard, in the order asked, each
    /// with only the hits in the top k of them all. A client that cannot
    /// fails, and the fan-out then calls each shard alone.
    async fn search_shards(
        &self,
        request: SearchRequest,
        shards: Vec<u32>,
        budget: Duration,
    ) -> Result<Vec<ShardAnswer>, CallError> {
        let _ = (request, shards, budget);
        Err(CallError::Failed(
            "this client cannot search several shards".to_string(),
        ))
    }
    /// `TermStats` of several shards of one process with one call
    /// (`TermStatsShards`), as [`LeafService::search_shards`].
    async fn term_stats_shards(
        &self,
        query: &str,
        shards: Vec<u32>,
        budget: Duration,
    ) -> Result<Vec<TermStatsAnswer>, CallError> {
        let _ = (query, shards, budget);
        Err(CallError::Failed(
            "this client cannot ask several shards".to_string(),
        ))
    }
}

/// One shard's part of a multi-shard answer, as a call to that shard alone
/// would have ended: its response, or the status it failed with.
fn part<R>(response: Option<R>, code: i32, message: String) -> Result<R, CallError> {
    match response {
        Some(response) => Ok(response),
        None => Err(tonic::Status::new(tonic::Code::from_i32(code), message).into()),
    }
}

/// One shard's part of a `SearchShards` answer.
pub fn shard_answer(answer: ShardAnswer) -> Result<SearchResponse, CallError> {
    part(answer.response, answer.error_code, answer.error_message)
}

/// One shard's part of a `TermStatsShards` answer.
pub fn stats_answer(answer: TermStatsAnswer) -> Result<TermStatsResponse, CallError> {
    part(answer.response, answer.error_code, answer.error_message)
}

/// How the frontend reaches leaves and cache servers: the credentials sent
/// on every call, and TLS when configured. The default sends no token over
/// plain TCP.
#[derive(Clone, Default)]
pub struct Connect {
    pub credentials: Credentials,
    pub tls: Option<ClientTls>,
}

impl Connect {
    /// The token and TLS of `security`.
    pub fn new(security: &svc::Security) -> Self {
        Connect {
            credentials: security.credentials(),
            tls: security.client.clone(),
        }
    }
}

/// A [`LeafService`] over an implementation of the `Leaf` service: a leaf
/// reached over gRPC ([`GrpcLeaf`]) or one served by this very process
/// ([`InProcessLeaf`]: no encoding, HTTP/2 or loopback). Every call names
/// the client's shard, carries its budget as `grpc-timeout` metadata (so
/// that a leaf in process applies its deadline, admission and metrics as
/// over the wire) and is bounded by the budget here too; a panic of the
/// callee fails the call instead of the caller's task.
pub struct LeafOver<S> {
    service: Arc<S>,
    /// The shard named in every call (none: the process's only shard): a
    /// process serving several shards answers for that one, and one
    /// serving another shard refuses rather than answering for the wrong
    /// one. Set by [`clients_of`].
    shard: Option<u32>,
    in_process: bool,
}

impl<S> Clone for LeafOver<S> {
    fn clone(&self) -> Self {
        LeafOver {
            service: Arc::clone(&self.service),
            shard: self.shard,
            in_process: self.in_process,
        }
    }
}

/// A gRPC leaf client over one lazily connected HTTP/2 channel.
pub type GrpcLeaf = LeafOver<Remote>;

/// A leaf served by this very process, called through its `Leaf` service.
pub type InProcessLeaf<S> = LeafOver<S>;

impl GrpcLeaf {
    /// Builds a client for `addr` (`host:port` or a URL) without connecting,
    /// sending no token.
    pub fn new(addr: &str) -> Result<Self, CallError> {
        GrpcLeaf::with_connect(addr, &Connect::default())
    }

    /// A client for `addr` that connects and authenticates with `connect`.
    pub fn with_connect(addr: &str, connect: &Connect) -> Result<Self, CallError> {
        Ok(LeafOver {
            service: Arc::new(Remote(LeafClient::new(lazy_channel(addr, connect)?))),
            shard: None,
            in_process: false,
        })
    }
}

impl<S: Leaf> InProcessLeaf<S> {
    /// A client of `service`, in this process, naming `shard` in every call.
    pub fn local(service: Arc<S>, shard: Option<u32>) -> Self {
        LeafOver {
            service,
            shard,
            in_process: true,
        }
    }
}

/// The `Leaf` service of a remote leaf: each call over the gRPC channel.
pub struct Remote(LeafClient<AuthChannel>);

#[async_trait]
impl Leaf for Remote {
    async fn search(
        &self,
        request: tonic::Request<SearchRequest>,
    ) -> Result<tonic::Response<SearchResponse>, tonic::Status> {
        self.0.clone().search(request).await
    }

    async fn info(
        &self,
        request: tonic::Request<InfoRequest>,
    ) -> Result<tonic::Response<InfoResponse>, tonic::Status> {
        self.0.clone().info(request).await
    }

    async fn term_stats(
        &self,
        request: tonic::Request<TermStatsRequest>,
    ) -> Result<tonic::Response<TermStatsResponse>, tonic::Status> {
        self.0.clone().term_stats(request).await
    }

    async fn search_shards(
        &self,
        request: tonic::Request<SearchShardsRequest>,
    ) -> Result<tonic::Response<SearchShardsResponse>, tonic::Status> {
        self.0.clone().search_shards(request).await
    }

    async fn term_stats_shards(
        &self,
        request: tonic::Request<TermStatsShardsRequest>,
    ) -> Result<tonic::Response<TermStatsShardsResponse>, tonic::Status> {
        self.0.clone().term_stats_shards(request).await
    }
}

/// A lazily connected channel to `addr`, shared by every call to it, with
/// the cluster's connect timeout and keep-alive pings
/// ([`svc::channel::ChannelOptions`]: a connection that stops answering
/// pings is closed and the next call connects anew), that sends
/// `connect`'s token on every call (over TLS when configured).
pub fn lazy_channel(addr: &str, connect: &Connect) -> Result<AuthChannel, CallError> {
    let endpoint = svc::channel::endpoint(addr, &svc::channel::ChannelOptions::default())
        .map_err(|error| CallError::Unreachable(format!("bad address {addr}: {error}")))?;
    let channel = svc::tls::channel(&endpoint, connect.tls.as_ref());
    Ok(InterceptedService::new(
        channel,
        connect.credentials.clone(),
    ))
}

/// Runs `call` with `budget` as both the gRPC deadline the server sees and a
/// local bound, so a hung connection cannot hold the caller past it.
pub async fn with_deadline<T, F>(budget: Duration, call: F) -> Result<T, CallError>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(budget, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(CallError::Timeout),
    }
}

fn request<T>(message: T, budget: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(budget);
    request
}

/// Runs one call as [`with_deadline`] does, with a panic of the callee
/// turned into a failed call.
async fn guarded<T, F>(budget: Duration, call: F) -> Result<T, CallError>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(with_deadline(budget, call))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(_) => Err(CallError::Failed(
            "the leaf panicked on this call".to_string(),
        )),
    }
}

#[async_trait]
impl<S: Leaf> LeafService for LeafOver<S> {
    fn in_process(&self) -> bool {
        self.in_process
    }

    async fn search(
        &self,
        mut message: SearchRequest,
        budget: Duration,
    ) -> Result<SearchResponse, CallError> {
        message.shard = self.shard;
        guarded(budget, self.service.search(request(message, budget))).await
    }

    async fn search_shards(
        &self,
        search: SearchRequest,
        shards: Vec<u32>,
        budget: Duration,
    ) -> Result<Vec<ShardAnswer>, CallError> {
        let message = SearchShardsRequest {
            search: Some(search),
            shards,
        };
        guarded(budget, self.service.search_shards(request(message, budget)))
            .await
            .map(|response| response.answers)
    }

    async fn term_stats_shards(
        &self,
        query: &str,
        shards: Vec<u32>,
        budget: Duration,
    ) -> Result<Vec<TermStatsAnswer>, CallError> {
        let message = TermStatsShardsRequest {
            query: query.to_string(),
            shards,
        };
        guarded(
            budget,
            self.service.term_stats_shards(request(message, budget)),
        )
        .await
        .map(|response| response.answers)
    }

    async fn term_stats(
        &self,
        query: &str,
        budget: Duration,
    ) -> Result<TermStatsResponse, CallError> {
        let message = TermStatsRequest {
            query: query.to_string(),
            shard: self.shard,
        };
        guarded(budget, self.service.term_stats(request(message, budget))).await
    }

    async fn info(&self, budget: Duration) -> Result<InfoResponse, CallError> {
        let message = InfoRequest { shard: self.shard };
        guarded(budget, self.service.info(request(message, budget))).await
    }
}

/// A leaf served by this process, found in the membership under its
/// advertised address like any other, but called in process.
#[derive(Clone)]
pub struct LocalLeaf {
    address: String,
    clients: ShardClients,
}

impl LocalLeaf {
    /// The leaf announced (leased or listed) as `address`, whose `Leaf`
    /// service is `service`.
    pub fn new<S: Leaf>(address: impl Into<String>, service: S) -> LocalLeaf {
        let service = Arc::new(service);
        LocalLeaf {
            address: address.into(),
            clients: Arc::new(move |shard| {
                Arc::new(InProcessLeaf::local(Arc::clone(&service), shard)) as Arc<dyn LeafService>
            }),
        }
    }
}

/// Makes clients of one leaf process, each naming the shard given in every
/// call (none: the process's only shard, or its first for `Info`).
pub type ShardClients = Arc<dyn Fn(Option<u32>) -> Arc<dyn LeafService> + Send + Sync>;

/// The clients of the leaf process at `address`: in process when it is one
/// of `local` (served by this process), over gRPC with `connect` otherwise.
pub fn clients_of(
    address: &str,
    connect: &Connect,
    local: &[LocalLeaf],
) -> Result<ShardClients, CallError> {
    if let Some(local) = local.iter().find(|local| local.address == address) {
        return Ok(Arc::clone(&local.clients));
    }
    let client = GrpcLeaf::with_connect(address, connect)?;
    Ok(Arc::new(move |shard| {
        Arc::new(LeafOver {
            shard,
            ..client.clone()
        }) as Arc<dyn LeafService>
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_the_replica_sent_is_told_from_a_transport_failure() {
        let sent = tonic::Status::unavailable("draining");
        assert_eq!(
            CallError::from(sent),
            CallError::Unavailable("draining".into())
        );
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        let error = CallError::from(broken);
        assert!(matches!(error, CallError::Unreachable(_)), "{error:?}");
        assert!(!error.from_replica());
        assert!(CallError::Rejected("full".into()).from_replica());
        assert!(!CallError::Timeout.from_replica());
    }
}

//! The gRPC `Cache` service: Get and Put of opaque values by key.

use bytes::Bytes;
use proto::cache::cache_server::{Cache, CacheServer};
use proto::cache::{GetRequest, GetResponse, PutRequest, PutResponse};
use tonic::{Request, Response, Status};

use crate::metrics::Op;
use crate::store::{Store, MAX_KEY_BYTES};

/// The tonic service over the cache's store.
#[derive(Clone)]
pub struct CacheService {
    store: Store,
}

impl CacheService {
    pub(crate) fn new(store: Store) -> Self {
        Self { store }
    }

    /// The service wrapped for a tonic server. Messages a little over the
    /// value limit still decode, so that an oversized value gets a clear
    /// INVALID_ARGUMENT rather than a transport error.
    pub(crate) fn server(self) -> CacheServer<Self> {
        let limit = self.store.max_value() * 2 + MAX_KEY_BYTES + 1024;
        CacheServer::new(self).max_decoding_message_size(limit)
    }
}

#[tonic::async_trait]
impl Cache for CacheService {
    #[tracing::instrument(skip_all, fields(key_len = request.get_ref().key.len()))]
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let _timer = self
            .store
            .metrics()
            .duration
            .with_label_values(&[Op::Get.label()])
            .start_timer();
        let value = self.store.get(&request.get_ref().key).await?;
        let response = match value {
            Some(value) => GetResponse {
                found: true,
                value: value.to_vec(),
            },
            None => GetResponse {
                found: false,
                value: Vec::new(),
            },
        };
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(key_len = request.get_ref().key.len(), value_len = request.get_ref().value.len()))]
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let _timer = self
            .store
            .metrics()
            .duration
            .with_label_values(&[Op::Put.label()])
            .start_timer();
        let PutRequest { key, value } = request.into_inner();
        self.store.put(key, Bytes::from(value)).await?;
        Ok(Response::new(PutResponse {}))
    }
}

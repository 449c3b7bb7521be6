//! Who is asking: the client identity that admission control shares its
//! slots by. The query layer gets a plain [`ClientId`] and knows no HTTP.
//!
//! - When the operator configures API keys, a request whose
//!   [`API_KEY_HEADER`] holds one of them is that key's client.
//! - Otherwise (no keys configured, no header, or a key that is not
//!   configured) the client is the source IP address. An unknown key never
//!   names a client of its own, so a flood cannot pass for many clients by
//!   inventing keys.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::http::state::{ApiKeys, AppState};
use crate::query::admission::ClientId;

/// The header that carries an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The client of a request, as an extractor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client(ClientId);

impl Client {
    pub fn id(&self) -> ClientId {
        self.0
    }

    /// The client of a request with these headers from `peer` (none: a
    /// request not from a socket, as in router tests).
    pub fn identify(
        keys: &ApiKeys,
        headers: &axum::http::HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Client {
        if !keys.is_empty() {
            if let Some(key) = headers
                .get(API_KEY_HEADER)
                .and_then(|value| value.to_str().ok())
                .filter(|key| keys.contains(key))
            {
                return Client(ClientId::of_key(key));
            }
        }
        match peer {
            Some(peer) => Client(ClientId::of_addr(peer.ip())),
            None => Client(ClientId::ANONYMOUS),
        }
    }
}

impl<S> FromRequestParts<S> for Client
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        Ok(Client::identify(&app.api_keys, &parts.headers, peer))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    fn peer(ip: [u8; 4]) -> Option<SocketAddr> {
        Some(SocketAddr::from((ip, 40000)))
    }

    #[test]
    fn clients_are_told_apart_by_address_without_keys() {
        let keys = ApiKeys::default();
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, "anything".parse().unwrap());
        let a = Client::identify(&keys, &headers, peer([127, 0, 0, 1]));
        let b = Client::identify(&keys, &HeaderMap::new(), peer([127, 0, 0, 2]));
        let a_again = Client::identify(
            &keys,
            &HeaderMap::new(),
            Some(SocketAddr::from(([127, 0, 0, 1], 1))),
        );
        assert_ne!(a, b);
        assert_eq!(a, a_again, "the port does not matter");
    }

    #[test]
    fn a_configured_key_names_its_client_and_an_unknown_key_does_not() {
        let keys = ApiKeys::new(["alpha".to_string(), "beta".to_string()]);
        let with = |key: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(API_KEY_HEADER, key.parse().unwrap());
            headers
        };
        let alpha = Client::identify(&keys, &with("alpha"), peer([127, 0, 0, 1]));
        let beta = Client::identify(&keys, &with("beta"), peer([127, 0, 0, 1]));
        let alpha_elsewhere = Client::identify(&keys, &with("alpha"), peer([127, 0, 0, 9]));
        let invented = Client::identify(&keys, &with("made-up"), peer([127, 0, 0, 1]));
        let address = Client::identify(&keys, &HeaderMap::new(), peer([127, 0, 0, 1]));
        assert_ne!(alpha, beta);
        assert_eq!(alpha, alpha_elsewhere);
        assert_eq!(
            invented, address,
            "an unknown key falls back to the address"
        );
    }
}

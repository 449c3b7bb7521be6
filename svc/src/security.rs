//! What a server needs to take part in the closed internal plane, built
//! once at startup from [`TokenConfig`] and [`TlsConfig`]: the live token
//! set (checked on incoming calls, sent on outgoing ones), the TLS acceptor
//! for its listener and the TLS connector for its clients.

use crate::auth::{AuthError, Credentials, TokenConfig, Tokens};
use crate::tls::{Acceptor, ClientTls, TlsConfig, TlsError};

/// The live credentials of one process (cheap to clone).
#[derive(Clone, Default)]
pub struct Security {
    /// None: an open server that sends no token.
    pub tokens: Option<Tokens>,
    /// TLS on the gRPC listener.
    pub acceptor: Option<Acceptor>,
    /// TLS on outgoing gRPC calls.
    pub client: Option<ClientTls>,
}

/// Why the credentials cannot be built (a configuration error).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Security {
    /// Reads the token file and the certificate files once (later changes
    /// are picked up as they happen). The gRPC listener speaks HTTP/2 only.
    pub fn new(tokens: &TokenConfig, tls: &TlsConfig) -> Result<Security, SecurityError> {
        Ok(Security {
            tokens: tokens.build()?,
            acceptor: tls.acceptor(&[b"h2"])?,
            client: tls.client()?,
        })
    }

    /// What clients send: the current token, if any.
    pub fn credentials(&self) -> Credentials {
        Credentials::from_tokens(self.tokens.as_ref())
    }
}

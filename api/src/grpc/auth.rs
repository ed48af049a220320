//! Authentication of every call of a wrapped service, and the caller's principal.
//!
//! tonic's interceptors are synchronous, and checking a key reads the store (a JWT
//! may fetch the identity provider's keys), so authentication is a service wrapper:
//! [`Authenticated`] answers `UNAUTHENTICATED` / `UNAVAILABLE` itself, before the
//! request body is read, or passes the request on with its [`Principal`] in the
//! extensions, where [`principal`] finds it.

use super::status;
use crate::auth::{AuthError, Authenticator, Denied, Principal};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Status};
use tracing::{info, warn};

/// A service whose every call is authenticated first.
#[derive(Clone)]
pub(crate) struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> Authenticated<S> {
    /// Wraps `inner`, authenticating with `auth`.
    pub(crate) fn new(inner: S, auth: Arc<Authenticator>) -> Self {
        Authenticated { inner, auth }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Authenticated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was made ready serves this call; a fresh clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let authorization = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str());
            let result = match authorization {
                Some(Err(_)) => Err(AuthError::Malformed("authorization holds non-ASCII bytes")),
                Some(Ok(value)) => auth.authenticate(Some(value)).await,
                None => auth.authenticate(None).await,
            };
            match result {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                }
                Err(e) => {
                    let status = unauthenticated(request.uri().path(), &e);
                    return Ok(status.into_http());
                }
            }
            let response = inner.call(request).await?;
            Ok(status::refine_oversized(response))
        })
    }
}

/// The status for a failed authentication, logged with its precise reason.
fn unauthenticated(method: &str, e: &AuthError) -> Status {
    if e.is_unavailable() {
        warn!(method, error = %e, "grpc call could not be authenticated");
        Status::unavailable(e.public_message())
    } else {
        info!(method, error = %e, "grpc call not authenticated");
        Status::unauthenticated(e.public_message())
    }
}

/// The authenticated caller of a request that came through [`Authenticated`].
pub(crate) fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| {
            // Fail closed: a service wired without the wrapper serves nobody.
            warn!("grpc call reached a handler without an authenticated principal");
            Status::unauthenticated(AuthError::Missing.public_message())
        })
}

/// The status for a refused authorisation, logged with its precise reason.
pub(crate) fn denied(e: Denied) -> Status {
    info!(reason = %e, "grpc call not allowed");
    Status::permission_denied(e.public_message())
}

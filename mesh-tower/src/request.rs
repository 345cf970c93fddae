//! What the mesh reads from a request's head in many places: whether it is gRPC, and its
//! authority.
//!
//! Why a module of its own: routing, the connections, the inbound checks and tracing all ask
//! the same two questions, and they sit at every level of the module graph. A leaf module
//! (it names nothing of the crate) lets each of them ask without joining a cycle.

use http::{HeaderMap, Request, header};

/// Whether the request (or response) is gRPC, by its content type.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The request's authority: the URI's (HTTP/2, absolute-form), else the `Host` header's.
pub(crate) fn authority<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

//! Local replies for gRPC callers.
//!
//! When the mesh itself fails a gRPC request (no route, no endpoint, timeout), the caller should
//! see a gRPC status, not a transport error: Envoy answers such requests with a *trailers-only*
//! response (HTTP 200, `grpc-status` and `grpc-message` in the headers), and so do we. A tonic
//! client then reports e.g. `Status { code: Unavailable, message: "target \"greeter\": no route …" }`.
//! Plain HTTP callers get the [`MeshError`] itself.

use crate::body::MeshBody;
use crate::error::MeshError;
use http::{HeaderValue, Response, header};

// Defined where connections pick HTTP/2 for gRPC, below this module (the module graph stays
// a DAG: connect does not depend on local replies).
pub(crate) use crate::connect::is_grpc;

/// A trailers-only gRPC response carrying `err` as its status.
pub(crate) fn local_reply(err: &MeshError) -> Response<MeshBody> {
    local_answer(true, 200, Some(err.kind().grpc_code()), &err.to_string())
}

/// A local answer with `status` and `body`: for a gRPC caller a trailers-only response whose
/// status is `grpc` (or `status` mapped as Envoy maps HTTP statuses), for others the HTTP
/// response itself.
pub(crate) fn local_answer(
    is_grpc: bool,
    status: u16,
    grpc: Option<u16>,
    body: &str,
) -> Response<MeshBody> {
    if is_grpc {
        let mut res = Response::new(MeshBody::empty());
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            "grpc-status",
            HeaderValue::from(grpc.unwrap_or_else(|| http_to_grpc(status))),
        );
        if let Ok(v) = HeaderValue::from_str(&percent_encode(body)) {
            h.insert("grpc-message", v);
        }
        return res;
    }
    let mut res = Response::new(if body.is_empty() {
        MeshBody::empty()
    } else {
        MeshBody::full(body.to_owned())
    });
    *res.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if !body.is_empty() {
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    res
}

pub(crate) use mesh_core::config::listener::http_to_grpc;

/// gRPC's `grpc-message` encoding: printable ASCII except `%` as is, everything else `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use http::HeaderMap;

    #[test]
    fn local_reply_is_trailers_only_with_status() {
        let err = MeshError::new(ErrorKind::Timeout, "100% late\n");
        let res = local_reply(&err);
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "4");
        assert_eq!(res.headers()["grpc-message"], "100%25 late%0A");
    }

    #[test]
    fn detects_grpc_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_grpc(&h));
    }
}

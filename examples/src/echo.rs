//! The `serve` example's application: an echo that says where it listens, what was asked and
//! who asked, over HTTP/1.1, HTTP/2 and gRPC (`helloworld.Greeter/SayHello`). The body (or the
//! gRPC reply's `message`) is `<listen-addr> <path> <peer-identity-or-"-">\n`, the identity being
//! the caller's SPIFFE ID (else its first SAN) as the mesh's TLS acceptor verified it.

use crate::greeter::{HelloReply, HelloRequest};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use mesh_tower::tls::PeerInfo;
use prost::Message;
use std::convert::Infallible;
use std::net::SocketAddr;

/// The echo's response body.
pub type EchoBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the echo answers for `path` from `peer` when listening on `listen`.
pub fn text(listen: SocketAddr, path: &str, peer: Option<&PeerInfo>) -> String {
    let who = peer
        .and_then(|p| p.identity.as_ref())
        .and_then(|i| {
            i.spiffe_id()
                .map(str::to_owned)
                .or_else(|| i.sans().first().map(|s| s.value.clone()))
        })
        .unwrap_or_else(|| "-".into());
    format!("{listen} {path} {who}\n")
}

/// Answers one request (the handler behind the mesh server).
pub async fn handle<B>(
    listen: SocketAddr,
    req: Request<B>,
) -> Result<Response<EchoBody>, Infallible>
where
    B: http_body::Body<Data = Bytes>,
{
    let text = text(listen, req.uri().path(), req.extensions().get::<PeerInfo>());
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        let body = http_body_util::Full::new(Bytes::from(text)).boxed_unsync();
        return Ok(Response::new(body));
    }
    let say_hello = req.uri().path() == "/helloworld.Greeter/SayHello";
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let (status, message) = match (say_hello, body.as_ref().ok().and_then(|b| unframe(b))) {
        (true, Some(_)) => ("0", Some(HelloReply { message: text })),
        (true, None) => ("13", None),
        (false, _) => ("12", None),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = Vec::new();
    if let Some(m) = message {
        let mut buf = BytesMut::with_capacity(5 + m.encoded_len());
        buf.put_u8(0);
        buf.put_u32(m.encoded_len() as u32);
        m.encode(&mut buf).expect("capacity reserved");
        frames.push(Ok(Frame::data(buf.freeze())));
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let mut res = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync());
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(res)
}

/// One uncompressed gRPC message → `HelloRequest`.
fn unframe(mut b: &[u8]) -> Option<HelloRequest> {
    if b.len() < 5 || b[0] != 0 {
        return None;
    }
    b.advance(1);
    let len = b.get_u32() as usize;
    HelloRequest::decode(b.get(..len)?).ok()
}

//! The gRPC contenders of the side-by-side harness: tonic straight to the server, tonic
//! through the mesh (config from go-control-plane over ADS), and grpc-go's own proxyless xDS
//! client (a Go program of ours, `interop/gocp/grpcload`) on the same control plane.
//!
//! All three call one unary method, `/bench.Echo/Unary`, with raw bytes as the message: no
//! protobuf on either side, so the numbers are the transport and the xDS stack, not a codec.

use bytes::{Buf, BufMut, Bytes};
use std::net::SocketAddr;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The method every gRPC contender calls.
pub(crate) const METHOD: &str = "/bench.Echo/Unary";

/// Messages are the bytes they are.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawCodec;

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

/// A tonic client over either transport.
#[derive(Clone)]
pub(crate) enum Tonic {
    /// tonic's own channel, straight to the server.
    Bare(tonic::client::Grpc<tonic::transport::Channel>),
    /// Through the mesh.
    Mesh(tonic::client::Grpc<mesh_tower::MeshService<tonic::body::Body>>),
}

impl Tonic {
    /// tonic's channel to `addr`.
    pub(crate) async fn bare(addr: SocketAddr) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        Self::Bare(tonic::client::Grpc::new(channel))
    }

    /// A mesh channel to `xds:///web`.
    pub(crate) fn mesh(mesh: &mesh_tower::Mesh) -> Self {
        Self::Mesh(tonic::client::Grpc::new(mesh.channel("xds:///web")))
    }

    /// One unary call; the echoed message's length.
    pub(crate) async fn call(&self, body: Bytes) -> Result<usize, String> {
        let path = http::uri::PathAndQuery::from_static(METHOD);
        let req = tonic::Request::new(body);
        let res = match self {
            Self::Bare(g) => {
                let mut g = g.clone();
                g.ready().await.map_err(|e| e.to_string())?;
                g.unary(req, path, RawCodec).await
            }
            Self::Mesh(g) => {
                let mut g = g.clone();
                g.ready().await.map_err(|e| e.to_string())?;
                g.unary(req, path, RawCodec).await
            }
        };
        res.map(|r| r.into_inner().len()).map_err(|e| e.to_string())
    }
}

/// Writes a gRPC xDS bootstrap for node `node` on the control plane at `ads`; its path.
pub(crate) fn bootstrap(ads: SocketAddr, node: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("sbs-bootstrap-{}.json", std::process::id()));
    let json = format!(
        r#"{{"xds_servers":[{{"server_uri":"{ads}","channel_creds":[{{"type":"insecure"}}],"server_features":["xds_v3"]}}],"node":{{"id":"{node}","cluster":"bench"}}}}"#
    );
    std::fs::write(&path, json).unwrap();
    path
}

/// The grpc-go client command: `GOMAXPROCS=1`, as the Rust clients run one runtime thread.
pub(crate) fn grpc_go_command(
    bootstrap: &std::path::Path,
    concurrency: usize,
    secs: f64,
    size: usize,
) -> std::process::Command {
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", super::CLIENT_CPU])
        .arg(mesh_interop::gocp::grpc_go_load_binary())
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .env("GOMAXPROCS", "1")
        .args(["-target", "xds:///web", "-method", METHOD])
        .arg(format!("-concurrency={concurrency}"))
        .arg(format!("-secs={secs}"))
        .arg(format!("-size={size}"));
    cmd
}

/// The echo server's answer to a gRPC call: the request's framed message back, `grpc-status: 0`
/// in the trailers.
pub(crate) fn echo_response(
    content_type: Option<http::HeaderValue>,
    framed: Bytes,
) -> http::Response<GrpcBody> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = vec![
        Ok(http_body::Frame::data(framed)),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let mut res = http::Response::new(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| http::HeaderValue::from_static("application/grpc")),
    );
    res
}

/// The body of [`echo_response`].
pub(crate) type GrpcBody = http_body_util::StreamBody<
    futures_util::stream::Iter<
        std::vec::IntoIter<Result<http_body::Frame<Bytes>, std::convert::Infallible>>,
    >,
>;

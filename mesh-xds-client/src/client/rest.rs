//! REST-JSON polling: Envoy's `api_type: REST`.
//!
//! Some control planes (sovereign, older in-house ones behind HTTP load balancers) serve xDS
//! as plain HTTP: `POST <base>/v3/discovery:<type>` with a `DiscoveryRequest` in proto3 JSON,
//! answered `200` with a `DiscoveryResponse`, `304` when the version asked about is current,
//! (sovereign) `404` when there is nothing of that type. No proxyless gRPC client speaks it;
//! Envoy does, and so does this client.
//!
//! The state machine is the same as for an ADS stream; only the transport differs. Each
//! type's latest request from the machine (its subscribed names, the version it accepted, or
//! a NACK's error detail) is what is posted; it is posted again every refresh delay, and at
//! once when its names change. A `404` is a response with no resources (for listeners and
//! clusters: all deleted, as SotW says). A failed poll ends the session: the client backs off
//! and starts again, serving its cached config meanwhile, as after a broken stream.

use super::Shared;
use super::servers::Settings;
use super::stream::{BoxError, begin, next_tick, on_sotw, read_token};
use crate::translate::ResourceType;
use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long one poll may take (connect, request, response).
const POLL_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls server `index`; returns whether any response came (to reset the backoff) once a
/// poll fails.
pub(super) async fn poll(
    shared: &Arc<Shared>,
    index: usize,
    settings: &Settings,
) -> Result<bool, BoxError> {
    let base: http::Uri = settings.uri.parse()?;
    let authority = base
        .authority()
        .ok_or_else(|| format!("{}: no host", settings.uri))?
        .clone();
    let prefix = base.path().trim_end_matches('/').to_owned();
    let token = read_token(settings).await?;
    let (mut rx, _) = begin(shared, index);
    let wake = &shared.streams[index].wake;
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let mut requests = super::polled::Requests::default();
    let mut answered = false;
    let mut next = Instant::now();
    loop {
        while let Ok(r) = rx.try_recv() {
            requests.take(r);
        }
        let all = Instant::now() >= next;
        if all {
            next = Instant::now() + settings.refresh;
        }
        for ty in requests.due(all) {
            let Some(req) = requests.request(ty) else {
                continue;
            };
            let path = format!("{prefix}/v3/discovery:{}", kind(ty));
            let sent = tokio::time::timeout(
                POLL_TIMEOUT,
                post(&mut conn, &authority, &path, &token, &req),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {POLL_TIMEOUT:?}").into()));
            match sent {
                Ok(Some(mut resp)) => {
                    answered = true;
                    if resp.type_url.is_empty() {
                        resp.type_url = req.type_url.clone();
                    }
                    on_sotw(shared, index, resp);
                }
                Ok(None) => answered = true,
                Err(e) => {
                    tracing::warn!(uri = %settings.uri, %path, error = %e, "REST-JSON poll failed; serving the cached config");
                    return Ok(answered);
                }
            }
            // What that response caused (an ACK, new names) before the next type.
            while let Ok(r) = rx.try_recv() {
                requests.take(r);
            }
        }
        if requests.any_due() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = wake.notified() => {}
            () = next_tick(shared, index) => {}
            r = rx.recv() => match r {
                Some(r) => requests.take(r),
                None => return Ok(answered),
            },
        }
    }
}

/// The discovery path's type name (`/v3/discovery:clusters`).
fn kind(ty: ResourceType) -> &'static str {
    match ty {
        ResourceType::Listener => "listeners",
        ResourceType::RouteConfiguration => "routes",
        ResourceType::Cluster => "clusters",
        ResourceType::ClusterLoadAssignment => "endpoints",
        ResourceType::Secret => "secrets",
    }
}

/// Posts `req`; `None` when the server says the version asked about is current.
async fn post(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    authority: &http::uri::Authority,
    path: &str,
    token: &Option<String>,
    req: &DiscoveryRequest,
) -> Result<Option<DiscoveryResponse>, BoxError> {
    // Defaults written out: sovereign requires `node.cluster` and `error_detail.details`.
    let body = serde_json::to_vec(&crate::json::to_value_with_defaults(req)?)?;
    let sender = match conn {
        Some(s) if !s.is_closed() => s,
        _ => conn.insert(connect(authority).await?),
    };
    sender.ready().await?;
    let mut http = http::Request::post(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        http = http.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let res = sender
        .send_request(http.body(Full::new(Bytes::from(body)))?)
        .await;
    let res = match res {
        Ok(res) => res,
        Err(e) => {
            *conn = None;
            return Err(e.into());
        }
    };
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    match status.as_u16() {
        200 => {
            let text = std::str::from_utf8(&bytes)?;
            let resp: DiscoveryResponse =
                crate::json::from_str(text).map_err(|e| format!("the DiscoveryResponse: {e}"))?;
            Ok(Some(resp))
        }
        304 => Ok(None),
        404 => Ok(Some(DiscoveryResponse {
            version_info: req.version_info.clone(),
            type_url: req.type_url.clone(),
            ..Default::default()
        })),
        _ => Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
        .into()),
    }
}

async fn connect(authority: &http::uri::Authority) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host().trim_matches(['[', ']']);
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "REST-JSON connection ended");
        }
    });
    Ok(sender)
}

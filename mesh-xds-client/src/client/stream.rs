//! One server's ADS stream: connect, subscribe, pump responses into its state machine, and
//! reconnect with backoff when the stream breaks (the cached config keeps serving).

use super::Shared;
use super::cascade::{cascade, tick};
use super::deliver::{deliver, quiet};
use super::servers::{Settings, Tls, Transport};
use crate::ads::{self, Ads, Output, Request};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Server `index`'s task: streams until dropped, reconnecting with exponential backoff and
/// full jitter.
///
/// gRFC A71's fallback: when the server in use cannot be reached (a stream that got no
/// response) while a wanted resource has no cached copy, the next server of its list is
/// tried at once; with everything cached, the client stays on its server and the cache
/// serves (a fallback could only bring different config). On a fallback, the primary is
/// probed at the backoff's pace, and once it accepts a connection the stream goes back to it.
/// Resources from any server stay cached across the switches.
pub(super) async fn run(shared: Arc<Shared>, index: usize) {
    let slot = &shared.streams[index];
    let (initial, max) = slot.servers[0].backoff;
    let mut failures: u32 = 0;
    loop {
        let current = slot.current.load(Ordering::Relaxed);
        let settings = &slot.servers[current];
        let ended = if current == 0 {
            Some(stream_once(&shared, index, settings).await)
        } else {
            tokio::select! {
                r = stream_once(&shared, index, settings) => Some(r),
                () = reachable(&slot.servers[0]) => None,
            }
        };
        super::metrics::connected(&settings.uri, false);
        {
            let mut st = shared.lock();
            st.ads[index].stream_ended();
            st.tx[index] = None;
        }
        let answered = match ended {
            None => {
                tracing::info!(primary = %slot.servers[0].uri, fallback = %settings.uri, "xDS primary reachable again: switching back");
                switch(&shared, index, 0);
                failures = 0;
                continue;
            }
            Some(Ok(answered)) => answered,
            Some(Err(e)) => {
                tracing::warn!(uri = %settings.uri, error = %e, "xDS stream failed; serving the cached config");
                false
            }
        };
        // The next server of the list, while this one fails.
        let mut fallback = None;
        if answered {
            failures = 0;
        } else {
            failures += 1;
            super::metrics::server_failure(&settings.uri);
            let next = current + 1;
            if next < slot.servers.len() {
                if shared.lock().ads[index].has_uncached() {
                    fall_back(&shared, index, next);
                    continue;
                }
                fallback = Some(next);
            } else if current != 0 {
                // The fallbacks failed too: start over from the primary, after the backoff.
                switch(&shared, index, 0);
            }
        }
        let cap = initial.saturating_mul(1u32 << failures.min(16)).min(max);
        let backoff = tokio::time::sleep(cap.mul_f64(fastrand::f64()));
        tokio::pin!(backoff);
        loop {
            tokio::select! {
                () = &mut backoff => break,
                // Subscriptions changed: a resource wanted now and not cached is worth the
                // fallback at once rather than after the backoff.
                () = slot.wake.notified() => {
                    if let Some(next) = fallback
                        && shared.lock().ads[index].has_uncached()
                    {
                        fall_back(&shared, index, next);
                        break;
                    }
                }
            }
        }
    }
}

/// Moves stream `index` to fallback server `next` (logged).
fn fall_back(shared: &Shared, index: usize, next: usize) {
    let slot = &shared.streams[index];
    let from = &slot.settings().uri;
    tracing::info!(unreachable = %from, fallback = %slot.servers[next].uri, "xDS fallback: resources wanted and not cached");
    switch(shared, index, next);
}

/// Moves stream `index` to its server `to`.
fn switch(shared: &Shared, index: usize, to: usize) {
    shared.streams[index].current.store(to, Ordering::Relaxed);
    shared.lock().ads[index].server_changed();
}

/// Resolves when `server` accepts a connection, tried at its backoff's pace.
async fn reachable(server: &Settings) {
    let (initial, max) = server.backoff;
    let mut failures: u32 = 0;
    loop {
        let cap = initial.saturating_mul(1u32 << failures.min(16)).min(max);
        tokio::time::sleep(cap.mul_f64(fastrand::f64())).await;
        if connect(&server.uri, server.tls.as_ref()).await.is_ok() {
            return;
        }
        failures += 1;
    }
}

/// One stream: returns whether any response arrived (to reset the backoff).
async fn stream_once(
    shared: &Arc<Shared>,
    index: usize,
    settings: &Settings,
) -> Result<bool, BoxError> {
    match &settings.transport {
        Transport::Grpc => {}
        #[cfg(feature = "json")]
        Transport::Rest => return super::rest::poll(shared, index, settings).await,
        #[cfg(feature = "json")]
        Transport::Files(path) => {
            return super::files::watch(shared, index, path, settings.refresh).await;
        }
    }
    let channel = connect(&settings.uri, settings.tls.as_ref()).await?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    // Queue the first requests before the call: servers may not answer before they see them.
    let (rx, protocol) = begin(shared, index);
    let token = read_token(settings).await?;
    match protocol {
        ads::Protocol::Sotw => {
            let (otx, orx) = mpsc::unbounded_channel();
            tokio::spawn(forward(rx, otx, |r| match r {
                Request::Sotw(r) => Some(r),
                Request::Delta(_) => None,
            }));
            let call = client.stream_aggregated_resources(with_token(
                UnboundedReceiverStream::new(orx),
                &token,
            )?);
            pump(shared, index, call, Ads::on_sotw).await
        }
        ads::Protocol::Delta => {
            let (otx, orx) = mpsc::unbounded_channel();
            tokio::spawn(forward(rx, otx, |r| match r {
                Request::Delta(r) => Some(r),
                Request::Sotw(_) => None,
            }));
            let call = client
                .delta_aggregated_resources(with_token(UnboundedReceiverStream::new(orx), &token)?);
            pump(shared, index, call, Ads::on_delta).await
        }
    }
}

/// Starts a new session with server `index`: its state machine's first requests go to the
/// returned queue (with any config change they imply applied).
pub(super) fn begin(
    shared: &Arc<Shared>,
    index: usize,
) -> (mpsc::UnboundedReceiver<Request>, ads::Protocol) {
    let (tx, rx) = mpsc::unbounded_channel::<Request>();
    let mut st = shared.lock();
    st.tx[index] = Some(tx);
    let out = st.ads[index].start_stream(Instant::now().into_std());
    let protocol = st.ads[index].protocol();
    drop(st);
    deliver(shared, index, out);
    cascade(shared);
    (rx, protocol)
}

#[cfg(feature = "json")]
/// Handles one SotW response from server `index` (any transport): into its state machine,
/// then the changes to the store and the requests to the queue.
pub(super) fn on_sotw(
    shared: &Arc<Shared>,
    index: usize,
    resp: envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
) {
    let out = shared.lock().ads[index].on_sotw(resp, Instant::now().into_std());
    let skip_cascade = quiet(shared, &out);
    deliver(shared, index, out);
    if !skip_cascade {
        cascade(shared);
    }
}

/// The bearer token, read afresh (rotated tokens are picked up at each session).
pub(super) async fn read_token(settings: &Settings) -> Result<Option<String>, BoxError> {
    Ok(match &settings.token {
        Some(path) => Some(tokio::fs::read_to_string(path).await?.trim().to_owned()),
        None => None,
    })
}

#[cfg(feature = "json")]
/// Resolves at server `index`'s next timer deadline, after handling it.
pub(super) async fn next_tick(shared: &Arc<Shared>, index: usize) {
    deadline(shared, index).await;
    tick(shared, index);
}

/// Runs one stream: waits for the call to be answered and then for responses, while serving
/// timers and subscription changes all along. (Servers such as grpc-go send response headers
/// only with their first response, so subscriptions must keep flowing before the call
/// completes; the cascade sends them from whichever task changes the interest.)
async fn pump<M, C>(
    shared: &Arc<Shared>,
    index: usize,
    call: C,
    on_message: fn(&mut Ads, M, std::time::Instant) -> Output,
) -> Result<bool, BoxError>
where
    C: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
{
    let wake = &shared.streams[index].wake;
    tokio::pin!(call);
    let mut inbound = loop {
        tokio::select! {
            res = &mut call => break res?.into_inner(),
            _ = wake.notified() => {}
            _ = deadline(shared, index) => tick(shared, index),
        }
    };
    let mut got_response = false;
    loop {
        tokio::select! {
            msg = inbound.message() => match msg? {
                Some(resp) => {
                    if !got_response {
                        super::metrics::connected(&shared.streams[index].settings().uri, true);
                    }
                    got_response = true;
                    let out = on_message(&mut shared.lock().ads[index], resp, Instant::now().into_std());
                    let skip_cascade = quiet(shared, &out);
                    deliver(shared, index, out);
                    if !skip_cascade {
                        cascade(shared);
                    }
                }
                None => return Ok(got_response),
            },
            _ = wake.notified() => {}
            _ = deadline(shared, index) => tick(shared, index),
        }
    }
}

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The streaming request, with the bearer token when one is configured.
pub(super) fn with_token<T>(
    stream: T,
    token: &Option<String>,
) -> Result<tonic::Request<T>, BoxError> {
    let mut req = tonic::Request::new(stream);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    Ok(req)
}

/// Moves requests of one protocol from the state machine's queue to the gRPC stream.
async fn forward<T>(
    mut rx: mpsc::UnboundedReceiver<Request>,
    tx: mpsc::UnboundedSender<T>,
    f: impl Fn(Request) -> Option<T>,
) {
    while let Some(r) = rx.recv().await {
        if let Some(m) = f(r)
            && tx.send(m).is_err()
        {
            break;
        }
    }
}

pub(super) async fn connect(
    uri: &str,
    tls: Option<&Tls>,
) -> Result<tonic::transport::Channel, BoxError> {
    if let Some(path) = uri
        .strip_prefix("unix://")
        .or_else(|| uri.strip_prefix("unix:"))
    {
        let path = PathBuf::from(path);
        let connector = tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        return Ok(tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(connector)
            .await?);
    }
    let mut endpoint = tonic::transport::Endpoint::from_shared(uri.to_owned())?;
    if let Some(tls) = tls {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem))
            .domain_name(tls.domain.clone());
        endpoint = endpoint.tls_config(config)?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?)
}

async fn deadline(shared: &Shared, index: usize) {
    let next = shared.lock().ads[index].next_deadline();
    match next {
        Some(t) => tokio::time::sleep_until(Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

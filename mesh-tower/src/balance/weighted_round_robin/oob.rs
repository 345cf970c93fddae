//! Out-of-band load reports: one ORCA stream per endpoint (gRFC A51; Envoy's and gRPC's
//! `enable_oob_load_report`).
//!
//! Reports on responses come only with traffic: an endpoint this caller has not sent to yet,
//! or one busy with a few long streams, tells it nothing, and each report is computed on the
//! endpoint's request path. With out-of-band reporting the caller opens one server-streaming
//! call, `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`, on each endpoint's HTTP/2
//! connection and asks for a report every `oob_reporting_period`; the endpoint answers on its
//! own schedule (grpc-go's server sends one at once, then at least every 30 s unless
//! configured lower) whatever the traffic. Each report becomes the endpoint's weight exactly
//! as a per-response report would; as in gRPC, reports on responses are then ignored.
//!
//! The stream lives as long as its endpoint stays in the cluster with the same connection and
//! settings: the cluster state owns an [`OobStream`] per endpoint, and dropping the last state
//! that holds it cancels the call. A stream that ends is opened again after gRPC's backoff
//! (1 s, ×1.6, ±20 % jitter, at most 120 s), at once if it had delivered a report; an endpoint
//! that answers `UNIMPLEMENTED` is not asked again (logged once). A malformed report ends the
//! stream like any other failure: an endpoint cannot break its callers with garbage.
//!
//! The stream is traffic on the data plane's connection, so it runs on the runtime that first
//! used the cluster (its connection's driver is spawned there too), not on the control thread.

use super::ReportSettings;
use crate::balance::EndpointStats;
use crate::balance::peak_ewma::now_nanos;
use crate::connect::Connection;
use crate::wire::{put_bytes, put_varint};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// The method endpoints serve their reports on.
pub(crate) const METHOD: &str = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics";

/// The largest report accepted (reports are tens of bytes; gRPC's default limit is 4 MiB).
const MAX_MESSAGE: usize = 1 << 20;

/// gRPC's connection backoff: base, multiplier, jitter, cap.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MULTIPLIER: f64 = 1.6;
const BACKOFF_JITTER: f64 = 0.2;
const BACKOFF_MAX: Duration = Duration::from_secs(120);

/// The out-of-band report stream of one endpoint; dropping it cancels the call.
pub(crate) struct OobStream {
    address: SocketAddr,
    conn: Arc<Connection>,
    settings: Arc<ReportSettings>,
    period: Duration,
    task: AbortHandle,
}

impl std::fmt::Debug for OobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OobStream")
            .field("address", &self.address)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Drop for OobStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OobStream {
    /// Starts asking the endpoint at `address` (through `conn`) for a report every `period`;
    /// reports become `stats`' weight under `settings`.
    pub(crate) fn start(
        runtime: &Handle,
        address: SocketAddr,
        conn: Arc<Connection>,
        stats: Arc<EndpointStats>,
        settings: Arc<ReportSettings>,
        period: Duration,
    ) -> Self {
        let task = runtime
            .spawn(run(conn.clone(), stats, settings.clone(), period))
            .abort_handle();
        Self {
            address,
            conn,
            settings,
            period,
            task,
        }
    }

    /// Whether this stream is the one a new state would start for the same endpoint.
    pub(crate) fn serves(
        &self,
        conn: &Arc<Connection>,
        settings: &ReportSettings,
        period: Duration,
    ) -> bool {
        Arc::ptr_eq(&self.conn, conn) && *self.settings == *settings && self.period == period
    }

    /// The endpoint it reports on.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }
}

/// How one call ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The endpoint does not serve the method: stop asking.
    Unimplemented,
    /// Anything else: ask again after a backoff.
    Failed(String),
}

async fn run(
    conn: Arc<Connection>,
    stats: Arc<EndpointStats>,
    settings: Arc<ReportSettings>,
    period: Duration,
) {
    let target = conn.target();
    let (cluster, address) = (target.cluster.clone(), target.address);
    let mut backoff = BACKOFF_BASE;
    loop {
        let mut reports = 0u64;
        let end = call(&conn, period, |report| {
            reports += 1;
            settings.record_report(report, &stats.reported)
        })
        .await;
        match end {
            End::Unimplemented => {
                tracing::warn!(
                    %cluster, %address,
                    "the endpoint does not serve ORCA's OpenRcaService: no out-of-band load \
                     reports from it (its weight is the median of the others')"
                );
                return;
            }
            End::Failed(why) => {
                tracing::debug!(%cluster, %address, reports, %why, "ORCA stream ended");
            }
        }
        if reports > 0 {
            backoff = BACKOFF_BASE;
            continue;
        }
        let jitter = 1.0 + BACKOFF_JITTER * (2.0 * fastrand::f64() - 1.0);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = backoff.mul_f64(BACKOFF_MULTIPLIER).min(BACKOFF_MAX);
    }
}

/// One `StreamCoreMetrics` call: each report is handed to `on_report` (an error there, a
/// malformed report, ends the call).
async fn call(
    conn: &Connection,
    period: Duration,
    mut on_report: impl FnMut(&[u8]) -> Result<(), super::orca::ReportError>,
) -> End {
    let uri = format!("http://{}{METHOD}", conn.target().address);
    let req = Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Full::new(request_message(period)));
    let Ok(req) = req else {
        return End::Failed("the request could not be built".into());
    };
    let res = match conn.send(req).await {
        Ok(res) => res,
        Err(e) => return End::Failed(e.to_string()),
    };
    if res.status() != http::StatusCode::OK {
        return End::Failed(format!("HTTP status {}", res.status()));
    }
    // A trailers-only answer carries its status in the headers.
    if let Some(end) = status_end(res.headers()) {
        return end;
    }
    let mut body = res.into_body();
    let mut buf = BytesMut::new();
    loop {
        let frame = match body.frame().await {
            None => return End::Failed("the stream ended without a status".into()),
            Some(Err(e)) => return End::Failed(e.to_string()),
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                let status = frame.trailers_ref().and_then(status_end);
                return status.unwrap_or_else(|| End::Failed("trailers without a status".into()));
            }
        };
        buf.extend_from_slice(&frame);
        loop {
            match next_message(&mut buf) {
                Ok(Some(msg)) => {
                    if let Err(e) = on_report(&msg) {
                        return End::Failed(e.to_string());
                    }
                }
                Ok(None) => break,
                Err(e) => return End::Failed(e),
            }
        }
    }
}

/// The call's end from its `grpc-status`, when present.
fn status_end(headers: &HeaderMap) -> Option<End> {
    let status = headers.get("grpc-status")?;
    Some(match status.as_bytes() {
        b"12" => End::Unimplemented,
        other => End::Failed(format!(
            "grpc-status {} {}",
            String::from_utf8_lossy(other),
            headers
                .get("grpc-message")
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .unwrap_or_default()
        )),
    })
}

/// The gRPC-framed `OrcaLoadReportRequest { report_interval: period }`.
fn request_message(period: Duration) -> Bytes {
    let mut duration = Vec::new();
    if period.as_secs() > 0 {
        put_varint(0x08, &mut duration); // seconds: field 1, varint
        put_varint(period.as_secs(), &mut duration);
    }
    if period.subsec_nanos() > 0 {
        put_varint(0x10, &mut duration); // nanos: field 2, varint
        put_varint(u64::from(period.subsec_nanos()), &mut duration);
    }
    let mut msg = Vec::new();
    put_bytes(1, &duration, &mut msg); // report_interval
    let mut framed = Vec::with_capacity(5 + msg.len());
    framed.push(0); // not compressed
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    framed.into()
}

/// Takes the next whole gRPC message off `buf`, if one is there.
fn next_message(buf: &mut BytesMut) -> Result<Option<Bytes>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err("a compressed report (none was accepted)".into());
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(format!("a report of {len} bytes (at most {MAX_MESSAGE})"));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The streams a new cluster state keeps: for each endpoint, its stream in `old` when that
/// serves the same connection and settings, else a new one.
pub(crate) fn streams(
    old: &[Arc<OobStream>],
    endpoints: &[crate::balance::EndpointInfo],
    conns: &[Arc<Connection>],
    settings: &Arc<ReportSettings>,
    period: Duration,
    runtime: &Handle,
) -> Vec<Arc<OobStream>> {
    let mut reuse: std::collections::HashMap<SocketAddr, &Arc<OobStream>> =
        old.iter().map(|s| (s.address(), s)).collect();
    endpoints
        .iter()
        .zip(conns)
        .map(|(e, conn)| match reuse.remove(&e.address) {
            Some(s) if s.serves(conn, settings, period) => s.clone(),
            _ => Arc::new(OobStream::start(
                runtime,
                e.address,
                conn.clone(),
                e.stats.clone(),
                settings.clone(),
                period,
            )),
        })
        .collect()
}

impl ReportSettings {
    /// Records an out-of-band report (a protobuf `xds.data.orca.v3.OrcaLoadReport`) into
    /// `weight`; a report without usable load leaves it alone.
    pub(crate) fn record_report(
        &self,
        report: &[u8],
        weight: &super::ReportedWeight,
    ) -> Result<(), super::orca::ReportError> {
        let report = super::orca::LoadReport::from_proto(report, &self.metric_names)?;
        if let Some(w) = report.weight(self.penalty) {
            weight.update_at(w, now_nanos());
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "oob_tests.rs"]
mod tests;

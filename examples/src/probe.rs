//! The probe's engine: send N requests through a mesh service and tally the outcomes.
//!
//! The `probe` example is a thin command line over [`run`]; tests call [`run`] directly.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_tower::{Mesh, MeshService, ServedBy};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tower::ServiceExt;

/// What to send.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// `xds:///<listener>` for a channel, or `host[:port]` for the HTTP client.
    pub target: String,
    /// How many requests.
    pub requests: usize,
    /// Path and query.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Responses by the endpoint that answered (any status).
    pub responses: BTreeMap<String, u64>,
    /// Every HTTP status seen, including the mesh's own replies.
    pub status: BTreeMap<String, u64>,
    /// Requests without an HTTP response, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Responses by the server identity the client verified (SPIFFE ID, else first SAN);
    /// plaintext answers are not counted here.
    pub peers: BTreeMap<String, u64>,
    /// Latency of every request, microseconds, sorted.
    pub latencies_us: Vec<u64>,
}

impl Report {
    fn merge(&mut self, other: Report) {
        for (k, v) in other.responses {
            *self.responses.entry(k).or_default() += v;
        }
        for (k, v) in other.status {
            *self.status.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.peers {
            *self.peers.entry(k).or_default() += v;
        }
        self.latencies_us.extend(other.latencies_us);
    }

    /// The `p`-quantile latency (nearest rank), 0 when nothing was sent.
    pub fn percentile(&self, p: f64) -> u64 {
        let l = &self.latencies_us;
        if l.is_empty() {
            return 0;
        }
        l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1]
    }

    /// The one-line JSON the probe prints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "responses": self.responses,
            "status": self.status,
            "errors": self.errors,
            "peers": self.peers,
            "latency_us": {
                "p50": self.percentile(0.50),
                "p99": self.percentile(0.99),
                "max": self.latencies_us.last().copied().unwrap_or(0),
            },
        })
    }
}

/// Sends `args.requests` requests through `mesh` and tallies them.
pub async fn run(mesh: &Mesh, args: &Args) -> Report {
    let (svc, uri) = if args.target.starts_with("xds:") {
        (
            mesh.channel::<Empty<Bytes>>(&args.target),
            args.path.clone(),
        )
    } else {
        (
            mesh.http_client::<Empty<Bytes>>(),
            format!("http://{}{}", args.target, args.path),
        )
    };
    let args = Arc::new(args.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.clamp(1, args.requests.max(1)) {
        let (svc, uri, args, next) = (svc.clone(), uri.clone(), args.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut report = Report::default();
            while next.fetch_add(1, Ordering::Relaxed) < args.requests {
                one(&svc, &uri, &args, &mut report).await;
            }
            report
        }));
    }
    let mut total = Report::default();
    for w in workers {
        total.merge(w.await.expect("probe worker panicked"));
    }
    total.latencies_us.sort_unstable();
    total
}

async fn one(svc: &MeshService<Empty<Bytes>>, uri: &str, args: &Args, tally: &mut Report) {
    let mut req = http::Request::get(uri);
    for (k, v) in &args.headers {
        req = req.header(k, v);
    }
    let req = match req.body(Empty::new()) {
        Ok(r) => r,
        Err(e) => {
            *tally.errors.entry(format!("bad_request: {e}")).or_default() += 1;
            return;
        }
    };
    let start = Instant::now();
    match svc.clone().oneshot(req).await {
        Ok(res) => {
            if let Some(peer) = res.extensions().get::<mesh_tower::tls::PeerIdentity>() {
                let who = peer
                    .spiffe_id()
                    .map(str::to_owned)
                    .or_else(|| peer.sans().first().map(|s| s.value.clone()))
                    .unwrap_or_default();
                *tally.peers.entry(who).or_default() += 1;
            }
            if let Some(served) = res.extensions().get::<ServedBy>() {
                *tally
                    .responses
                    .entry(served.endpoint.to_string())
                    .or_default() += 1;
            }
            *tally
                .status
                .entry(res.status().as_u16().to_string())
                .or_default() += 1;
            if res.into_body().collect().await.is_err() {
                *tally.errors.entry("body".into()).or_default() += 1;
            }
        }
        Err(e) => *tally.errors.entry(e.kind().to_string()).or_default() += 1,
    }
    tally.latencies_us.push(start.elapsed().as_micros() as u64);
}

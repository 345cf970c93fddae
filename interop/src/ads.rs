//! An in-process ADS server for exact scripts: serves a snapshot (SotW or Delta) like a real
//! control plane, records every request, counts the bytes it sends, and can misbehave on
//! demand (NACK storms, silence, being killed).
//!
//! Pushes on [`FakeAds::set`] go only where something changed: SotW resends the full state of
//! each *changed type* (per-type versions, as Envoy's own management servers do); Delta sends
//! only the changed and removed resources.

#![allow(missing_docs, missing_debug_implementations)]

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

fn next_nonce() -> u64 {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// type URL → name → resource.
pub type Resources = BTreeMap<String, BTreeMap<String, Any>>;

#[derive(Default)]
struct State {
    version: u64,
    resources: Resources,
    /// Every request received, in order: (type_url, names or subscribe list, nack message).
    requests: Vec<Seen>,
    streams: u64,
    /// Streams whose client ended them (or whose connection went away).
    closed: u64,
    bytes_sent: u64,
    silent: bool,
    storm: bool,
    /// Live streams: a sender to push to and their subscriptions.
    live: Vec<Live>,
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub type_url: String,
    pub names: Vec<String>,
    pub version: String,
    pub nack: Option<String>,
    pub node_id: Option<String>,
    /// The response nonce the request answers.
    pub nonce: String,
}

enum Live {
    Sotw(
        mpsc::UnboundedSender<Result<DiscoveryResponse, Status>>,
        Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    ),
    Delta(
        mpsc::UnboundedSender<Result<DeltaDiscoveryResponse, Status>>,
        Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    ),
}

/// Handle to the fake control plane.
#[derive(Clone)]
pub struct FakeAds {
    state: Arc<Mutex<State>>,
    seen: Arc<Notify>,
    pub addr: SocketAddr,
    /// The server runs on a runtime of its own: dropping it ends every connection at once,
    /// like a killed process.
    runtime: Arc<Rt>,
}

/// Owns the fake's runtime; shutting down never blocks (safe inside async tests).
struct Rt(Mutex<Option<tokio::runtime::Runtime>>);

impl Rt {
    fn shutdown(&self) {
        if let Some(rt) = self.0.lock().unwrap().take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl FakeAds {
    pub async fn start() -> FakeAds {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> FakeAds {
        Self::start_with(addr, None).await
    }

    /// Starts serving over TLS with this PEM certificate chain and key.
    pub async fn start_tls(cert_pem: String, key_pem: String) -> FakeAds {
        Self::start_with("127.0.0.1:0".parse().unwrap(), Some((cert_pem, key_pem))).await
    }

    async fn start_with(addr: SocketAddr, tls: Option<(String, String)>) -> FakeAds {
        let (runtime, listener) = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
            (rt, listener)
        })
        .join()
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let seen = Arc::new(Notify::new());
        let svc = Svc {
            state: state.clone(),
            seen: seen.clone(),
        };
        runtime.spawn(async move {
            let mut builder = tonic::transport::Server::builder();
            if let Some((cert, key)) = tls {
                let identity = tonic::transport::Identity::from_pem(cert, key);
                builder = builder
                    .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                    .expect("valid TLS identity");
            }
            let _ = builder
                .add_service(AggregatedDiscoveryServiceServer::new(svc))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        FakeAds {
            state,
            seen,
            addr,
            runtime: Arc::new(Rt(Mutex::new(Some(runtime)))),
        }
    }

    /// Stops serving and drops every connection and stream (a killed control plane).
    pub fn kill(&self) {
        self.state.lock().unwrap().live.clear();
        self.runtime.shutdown();
    }

    /// Replaces the snapshot and pushes what changed to every open stream.
    pub fn set(&self, resources: Resources) {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        let old = std::mem::replace(&mut st.resources, resources);
        fn value<'a>(r: &'a Resources, type_url: &str, name: &str) -> Option<&'a [u8]> {
            r.get(type_url)
                .and_then(|m| m.get(name))
                .map(|a| a.value.as_slice())
        }
        let new = &st.resources;
        let changed: Vec<(String, String)> = (old.iter().chain(new.iter()))
            .flat_map(|(t, m)| m.keys().map(move |n| (t, n)))
            .filter(|(t, n)| value(&old, t, n) != value(new, t, n))
            .map(|(t, n)| (t.clone(), n.clone()))
            .collect();
        push(st, &changed);
    }

    /// Changes one resource (`None` removes it) and pushes it where it is subscribed, as an
    /// incremental control plane does: the server's work is O(1) in the snapshot's size (a
    /// SotW push still resends the type's subscribed names, as that protocol requires), so
    /// benches that time a push measure the client.
    pub fn update(&self, type_url: &str, name: &str, resource: Option<Any>) {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        let table = st.resources.entry(type_url.to_owned()).or_default();
        match resource {
            Some(any) => table.insert(name.to_owned(), any),
            None => table.remove(name),
        };
        push(st, &[(type_url.to_owned(), name.to_owned())]);
    }

    /// The snapshot's version: bumped by every [`set`](Self::set); responses to it carry nonces
    /// starting `"<version>-"`.
    pub fn version(&self) -> u64 {
        self.state.lock().unwrap().version
    }

    /// Bytes of every response sent so far (protobuf-encoded payloads).
    pub fn bytes_sent(&self) -> u64 {
        self.state.lock().unwrap().bytes_sent
    }

    /// Sends `resp` exactly as given on every open SotW stream (scripts that need their own
    /// versions, nonces or sizes; pair with [`set_silent`](Self::set_silent) so requests are
    /// not answered from the snapshot too).
    pub fn push_sotw(&self, resp: DiscoveryResponse) {
        let mut st = self.state.lock().unwrap();
        let mut sent = 0;
        for live in &st.live {
            if let Live::Sotw(tx, _) = live {
                sent += resp.encoded_len() as u64;
                let _ = tx.send(Ok(resp.clone()));
            }
        }
        st.bytes_sent += sent;
    }

    /// Sends `resp` exactly as given on every open Delta stream.
    pub fn push_delta(&self, resp: DeltaDiscoveryResponse) {
        let mut st = self.state.lock().unwrap();
        let mut sent = 0;
        for live in &st.live {
            if let Live::Delta(tx, _) = live {
                sent += resp.encoded_len() as u64;
                let _ = tx.send(Ok(resp.clone()));
            }
        }
        st.bytes_sent += sent;
    }

    /// Never answer (a silent control plane).
    pub fn set_silent(&self, silent: bool) {
        self.state.lock().unwrap().silent = silent;
    }

    /// Answer every NACK with the same response at once (a NACK storm).
    pub fn set_storm(&self, storm: bool) {
        self.state.lock().unwrap().storm = storm;
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn streams(&self) -> u64 {
        self.state.lock().unwrap().streams
    }

    /// Waits until `n` streams have ended on the client's side (woken by each end).
    pub async fn wait_closed(&self, n: u64) {
        loop {
            let notified = self.seen.notified();
            if self.state.lock().unwrap().closed >= n {
                return;
            }
            tokio::time::timeout(std::time::Duration::from_secs(10), notified)
                .await
                .expect("streams closed in time");
        }
    }

    /// Streams ended so far.
    pub fn closed(&self) -> u64 {
        self.state.lock().unwrap().closed
    }

    /// Waits until a request satisfying `f` has been seen.
    pub async fn wait_for(&self, f: impl Fn(&Seen) -> bool) -> Seen {
        self.wait_until(|all| all.iter().any(&f)).await;
        self.requests().into_iter().find(|s| f(s)).expect("seen")
    }

    /// Waits until the requests seen so far satisfy `f` (woken by each new request).
    pub async fn wait_until(&self, f: impl Fn(&[Seen]) -> bool) {
        loop {
            let notified = self.seen.notified();
            if f(&self.requests()) {
                return;
            }
            tokio::time::timeout(std::time::Duration::from_secs(10), notified)
                .await
                .expect("request seen in time");
        }
    }
}

/// Bumps the version and sends what `changed` (type URL, name) touches to every open stream
/// subscribed to it.
fn push(st: &mut State, changed: &[(String, String)]) {
    st.version += 1;
    let version = st.version;
    let all = &st.resources;
    let touched: BTreeSet<(&str, &str)> = (changed.iter())
        .map(|(t, n)| (t.as_str(), n.as_str()))
        .collect();
    let changed = |type_url: &str, name: &str| touched.contains(&(type_url, name));
    let mut sent = 0;
    for live in &st.live {
        match live {
            Live::Sotw(tx, subs) => {
                for (type_url, names) in subs.lock().unwrap().iter() {
                    if names.iter().any(|n| changed(type_url, n)) {
                        let resp = sotw_response(all, type_url, names, version);
                        sent += resp.encoded_len() as u64;
                        let _ = tx.send(Ok(resp));
                    }
                }
            }
            Live::Delta(tx, subs) => {
                for (type_url, names) in subs.lock().unwrap().iter() {
                    let diff: BTreeSet<String> = names
                        .iter()
                        .filter(|n| changed(type_url, n))
                        .cloned()
                        .collect();
                    if !diff.is_empty() {
                        let resp = delta_response(all, type_url, &diff, version, true);
                        sent += resp.encoded_len() as u64;
                        let _ = tx.send(Ok(resp));
                    }
                }
            }
        }
    }
    st.bytes_sent += sent;
}

fn sotw_response(
    all: &Resources,
    type_url: &str,
    names: &[String],
    version: u64,
) -> DiscoveryResponse {
    let by_name = all.get(type_url);
    DiscoveryResponse {
        version_info: version.to_string(),
        resources: names
            .iter()
            .filter_map(|n| by_name.and_then(|m| m.get(n)).cloned())
            .collect(),
        type_url: type_url.into(),
        nonce: format!("{version}-{}", next_nonce()),
        ..Default::default()
    }
}

fn delta_response(
    all: &Resources,
    type_url: &str,
    names: &BTreeSet<String>,
    version: u64,
    with_removed: bool,
) -> DeltaDiscoveryResponse {
    let by_name = all.get(type_url);
    let mut resp = DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: format!("{version}-{}", next_nonce()),
        system_version_info: version.to_string(),
        ..Default::default()
    };
    for n in names {
        match by_name.and_then(|m| m.get(n)) {
            Some(any) => resp.resources.push(Resource {
                name: n.clone(),
                version: format!("{version}"),
                resource: Some(any.clone()),
                ..Default::default()
            }),
            None if with_removed => resp.removed_resources.push(n.clone()),
            None => {}
        }
    }
    resp
}

#[derive(Clone)]
struct Svc {
    state: Arc<Mutex<State>>,
    seen: Arc<Notify>,
}

type SotwOut = UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;
type DeltaOut = UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Svc {
    type StreamAggregatedResourcesStream = SotwOut;
    type DeltaAggregatedResourcesStream = DeltaOut;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwOut>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let subs = Arc::new(Mutex::new(BTreeMap::<String, Vec<String>>::new()));
        {
            let mut st = self.state.lock().unwrap();
            st.streams += 1;
            st.live.push(Live::Sotw(tx.clone(), subs.clone()));
        }
        let (state, seen) = (self.state.clone(), self.seen.clone());
        tokio::spawn(async move {
            let mut last_sent: BTreeMap<String, DiscoveryResponse> = BTreeMap::new();
            while let Ok(Some(r)) = inbound.message().await {
                let mut st = state.lock().unwrap();
                st.requests.push(Seen {
                    type_url: r.type_url.clone(),
                    names: r.resource_names.clone(),
                    version: r.version_info.clone(),
                    nack: r.error_detail.as_ref().map(|e| e.message.clone()),
                    node_id: r.node.as_ref().map(|n| n.id.clone()),
                    nonce: r.response_nonce.clone(),
                });
                seen.notify_waiters();
                if st.silent {
                    continue;
                }
                if r.error_detail.is_some() {
                    if st.storm
                        && let Some(prev) = last_sent.get(&r.type_url)
                    {
                        let mut again = prev.clone();
                        again.nonce = format!("storm-{}", next_nonce());
                        let _ = tx.send(Ok(again));
                    }
                    continue;
                }
                let changed_names =
                    subs.lock().unwrap().get(&r.type_url) != Some(&r.resource_names);
                let current = st.version.to_string();
                subs.lock()
                    .unwrap()
                    .insert(r.type_url.clone(), r.resource_names.clone());
                if changed_names || r.version_info != current {
                    let resp =
                        sotw_response(&st.resources, &r.type_url, &r.resource_names, st.version);
                    last_sent.insert(r.type_url.clone(), resp.clone());
                    let _ = tx.send(Ok(resp));
                }
            }
            state.lock().unwrap().closed += 1;
            seen.notify_waiters();
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaOut>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let subs = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<String>>::new()));
        {
            let mut st = self.state.lock().unwrap();
            st.streams += 1;
            st.live.push(Live::Delta(tx.clone(), subs.clone()));
        }
        let (state, seen) = (self.state.clone(), self.seen.clone());
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                let mut st = state.lock().unwrap();
                st.requests.push(Seen {
                    type_url: r.type_url.clone(),
                    names: r.resource_names_subscribe.clone(),
                    version: String::new(),
                    nack: r.error_detail.as_ref().map(|e| e.message.clone()),
                    node_id: r.node.as_ref().map(|n| n.id.clone()),
                    nonce: r.response_nonce.clone(),
                });
                seen.notify_waiters();
                if st.silent || r.error_detail.is_some() {
                    continue;
                }
                let new: BTreeSet<String> = {
                    let mut subs = subs.lock().unwrap();
                    let entry = subs.entry(r.type_url.clone()).or_default();
                    for n in &r.resource_names_unsubscribe {
                        entry.remove(n);
                    }
                    r.resource_names_subscribe
                        .iter()
                        .filter(|n| entry.insert((*n).clone()))
                        .cloned()
                        .collect()
                };
                if !new.is_empty() {
                    let resp = delta_response(&st.resources, &r.type_url, &new, st.version, false);
                    st.bytes_sent += resp.encoded_len() as u64;
                    let _ = tx.send(Ok(resp));
                }
            }
            state.lock().unwrap().closed += 1;
            seen.notify_waiters();
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

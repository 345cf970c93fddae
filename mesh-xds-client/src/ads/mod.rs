//! The ADS protocol as a state machine: responses in, requests and config changes out.
//!
//! No IO happens here, so every rule is unit-tested without a network (`tests.rs`):
//! - per type: the accepted `version_info` (SotW), the last `nonce`, the subscribed names;
//! - ACK with the response's version; NACK with the *previous* version and an `error_detail`
//!   naming each rejected resource and field. Valid resources of a NACKed response still apply
//!   (gRFC A46);
//! - SotW deletion: a listener or cluster we hold that is missing from a SotW response no
//!   longer exists; an absent route config or endpoint set means nothing (they are not required
//!   in every response). Delta: `removed_resources`. Either can be ignored (gRFC A53);
//! - a subscribed resource that has not arrived within the timeout (15 s by default, counted
//!   from the request) is reported as not existing, so callers fail clearly instead of waiting;
//! - consecutive NACKs of one type are spaced by an exponential backoff, so a server that
//!   re-sends the same bad config at once cannot make us spin.

use crate::translate::{self, ResourceType, Translated};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Which ADS variant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// State of the World (`StreamAggregatedResources`).
    #[default]
    Sotw,
    /// Incremental (`DeltaAggregatedResources`).
    Delta,
}

/// Settings of the state machine.
#[derive(Clone, Debug)]
pub struct Config {
    /// SotW or Delta.
    pub protocol: Protocol,
    /// Sent on the first request of each stream.
    pub node: Node,
    /// How long a subscribed resource may take to arrive before it "does not exist".
    pub resource_timeout: Duration,
    /// gRFC A53: keep resources the server deletes.
    pub ignore_resource_deletion: bool,
    /// What resources may reference (the bootstrap's certificate provider instances).
    pub context: translate::Context,
}

/// A request to send on the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// SotW.
    Sotw(DiscoveryRequest),
    /// Delta.
    Delta(DeltaDiscoveryRequest),
}

impl Request {
    /// The type it is for.
    pub fn type_url(&self) -> &str {
        match self {
            Request::Sotw(r) => &r.type_url,
            Request::Delta(r) => &r.type_url,
        }
    }

    /// Whether it NACKs a response.
    pub fn is_nack(&self) -> bool {
        match self {
            Request::Sotw(r) => r.error_detail.is_some(),
            Request::Delta(r) => r.error_detail.is_some(),
        }
    }
}

/// A change to apply to the config store.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A resource arrived or changed.
    Upsert(Translated),
    /// No longer subscribed: forget it.
    Remove(ResourceType, String),
    /// The server says (or the timeout implies) it does not exist.
    Missing(ResourceType, String, String),
}

/// What handling an event produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Requests to send, in order.
    pub requests: Vec<Request>,
    /// Config changes to apply, atomically.
    pub changes: Vec<Change>,
    /// Wait this long before sending (set when the requests include a repeated NACK).
    pub delay: Option<Duration>,
    /// Resources received valid (whether or not they changed) and invalid, by type index
    /// (gRFC A78's `resource_updates_valid` / `_invalid`).
    pub updates: [(u64, u64); ResourceType::ALL.len()],
}

/// What we know of one resource, for status dumps (CSDS-like).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResourceStatus {
    /// Version of the last accepted copy (Delta: the resource's; SotW: the response's).
    pub version: String,
    /// When the last accepted copy arrived.
    pub last_updated: Option<SystemTime>,
    /// State: `requested`, `acked`, `nacked` (never accepted), `does_not_exist`.
    pub state: &'static str,
    /// Why the last copy was rejected, if it was.
    pub last_error: Option<String>,
    /// The last accepted copy as it came (CSDS's `xds_config`).
    #[serde(skip)]
    pub resource: Option<Arc<Any>>,
}

#[derive(Debug, Default)]
struct Meta {
    status: ResourceStatus,
    has_value: bool,
    missing: bool,
    requested_at: Option<Instant>,
    /// Hash of the accepted copy's bytes (see [`TypeState::by_content`]).
    content: Option<u64>,
}

/// A resource copy's identity for [`TypeState::by_content`]: xxHash64 over its type URL and
/// bytes (64 bits; a control plane able to forge collisions could send anything anyway). Every
/// byte of every response goes through it: xxHash is several times SipHash's speed.
fn content_hash(any: &Any) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    h.update(any.type_url.as_bytes());
    h.update(&[0]);
    h.update(&any.value);
    h.digest()
}

/// Keys that are hashes already ([`content_hash`]) are their own hash.
#[derive(Clone, Copy, Debug, Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in case.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Default)]
struct TypeState {
    wanted: BTreeSet<String>,
    /// Delta: what the server was told on this stream. SotW: whether we sent a request.
    told: BTreeSet<String>,
    sent_any: bool,
    version: String,
    nonce: String,
    resources: BTreeMap<String, Meta>,
    /// The accepted copies by the hash of their bytes: a copy that comes again byte for byte
    /// (SotW resends every resource of a type on each change; any server resends all on
    /// reconnect) is recognised without decoding, validating or re-applying it. At 10,000
    /// clusters this turns a one-endpoint SotW update from ~55 ms of client work into the
    /// hashing of the response (a few ms).
    by_content: HashMap<u64, String, std::hash::BuildHasherDefault<Prehashed>>,
    nacks_in_a_row: u32,
}

/// The ADS state machine.
#[derive(Debug)]
pub struct Ads {
    config: Config,
    types: [TypeState; ResourceType::ALL.len()],
    node_sent: bool,
    streaming: bool,
    /// The next stream goes to another server than the last: versions mean nothing there.
    new_server: bool,
}

const NACK_BACKOFF_BASE: Duration = Duration::from_millis(100);
const NACK_BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Ads {
    /// A state machine with nothing subscribed.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            types: Default::default(),
            node_sent: false,
            streaming: false,
            new_server: false,
        }
    }

    /// The protocol in use.
    pub fn protocol(&self) -> Protocol {
        self.config.protocol
    }

    /// A new stream is up: (re)subscribe everything wanted; cached resources stay in force.
    pub fn start_stream(&mut self, now: Instant) -> Output {
        self.node_sent = false;
        self.streaming = true;
        let mut out = Output::default();
        for ty in ResourceType::ALL {
            let st = &mut self.types[ty.index()];
            st.nonce.clear();
            st.told.clear();
            st.sent_any = false;
            st.nacks_in_a_row = 0;
            for meta in st.resources.values_mut() {
                if !meta.has_value && !meta.missing {
                    meta.requested_at = Some(now);
                }
            }
            if !st.wanted.is_empty() {
                let req = self.subscription_request(ty);
                out.requests.push(req);
            }
        }
        self.new_server = false;
        out
    }

    /// The next stream is to another server (gRFC A71's fallback, or back): the versions the
    /// last one gave are not stated (SotW's `version_info`, Delta's initial versions), so it
    /// sends every wanted resource; the cache stays in force meanwhile.
    pub fn server_changed(&mut self) {
        self.new_server = true;
        for st in &mut self.types {
            st.version.clear();
        }
    }

    /// Whether a wanted resource has no copy yet (neither a value nor known not to exist):
    /// gRFC A71 falls back from an unreachable server only then.
    pub fn has_uncached(&self) -> bool {
        self.types.iter().any(|st| {
            st.wanted.iter().any(|name| {
                st.resources
                    .get(name)
                    .is_none_or(|m| !m.has_value && !m.missing)
            })
        })
    }

    /// The stream broke: timers stop until the next stream (the cache stays).
    pub fn stream_ended(&mut self) {
        self.streaming = false;
        for st in &mut self.types {
            for meta in st.resources.values_mut() {
                meta.requested_at = None;
            }
        }
    }

    /// The route configs server listeners name through RDS (translated in server form from
    /// the next response on).
    pub fn set_inbound_route_configs(&mut self, names: &BTreeSet<String>) {
        if self.config.context.inbound_route_configs != *names {
            self.config.context.inbound_route_configs = names.clone();
        }
    }

    /// Sets the names wanted for a type; unsubscribed names are forgotten.
    pub fn set_wanted(
        &mut self,
        ty: ResourceType,
        names: BTreeSet<String>,
        now: Instant,
    ) -> Output {
        let mut out = Output::default();
        let streaming = self.streaming;
        let linger = self.config.protocol == Protocol::Delta && restated(ty) && names.is_empty();
        let st = &mut self.types[ty.index()];
        // Over Delta the last listener/cluster names stay subscribed when nothing wants them:
        // emptying a wildcard type's subscription makes istiod treat it as "everything" (see
        // `restated`), after which a later subscription to the same name goes unanswered.
        // The lingering resources stay in the store, ready when a target comes back.
        if st.wanted == names || linger {
            return out;
        }
        for gone in st.wanted.difference(&names) {
            if let Some(h) = st.resources.remove(gone).and_then(|m| m.content) {
                st.by_content.remove(&h);
            }
            out.changes.push(Change::Remove(ty, gone.clone()));
        }
        for new in names.difference(&st.wanted) {
            let meta = st.resources.entry(new.clone()).or_default();
            meta.status.state = "requested";
            meta.requested_at = streaming.then_some(now);
        }
        st.wanted = names;
        if streaming && (st.sent_any || !st.wanted.is_empty()) {
            let req = self.subscription_request(ty);
            out.requests.push(req);
        }
        out
    }

    fn node(&mut self) -> Option<Node> {
        if self.node_sent {
            None
        } else {
            self.node_sent = true;
            Some(self.config.node.clone())
        }
    }

    /// A request telling the server the current subscription of `ty` (not an ACK).
    ///
    /// Delta subscriptions of the wildcard types (listeners, clusters) restate every wanted
    /// name in `resource_names_subscribe`, not only the new ones. The protocol makes a repeated
    /// subscription a no-op, and istiod needs it: for these types it generates only the names
    /// a request subscribes (all of them when it subscribes none) and then records what it
    /// generated as the client's whole subscription.
    fn subscription_request(&mut self, ty: ResourceType) -> Request {
        if self.config.protocol == Protocol::Sotw {
            // In SotW every request states the whole subscription; a change is an ACK-shaped
            // request with the current version and nonce.
            return self.response_request(ty, None);
        }
        let node = self.node();
        let new_server = self.new_server;
        let st = &mut self.types[ty.index()];
        st.sent_any = true;
        match self.config.protocol {
            Protocol::Sotw => unreachable!("handled above"),
            Protocol::Delta => {
                let subscribe: Vec<String> = if restated(ty) {
                    st.wanted.iter().cloned().collect()
                } else {
                    st.wanted.difference(&st.told).cloned().collect()
                };
                let unsubscribe: Vec<String> = st.told.difference(&st.wanted).cloned().collect();
                let initial = if st.told.is_empty() && !new_server {
                    st.resources
                        .iter()
                        .filter(|(n, m)| m.has_value && st.wanted.contains(*n))
                        .map(|(n, m)| (n.clone(), m.status.version.clone()))
                        .collect()
                } else {
                    Default::default()
                };
                st.told = st.wanted.clone();
                Request::Delta(DeltaDiscoveryRequest {
                    node,
                    type_url: ty.type_url().into(),
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    initial_resource_versions: initial,
                    ..Default::default()
                })
            }
        }
    }

    /// Reports subscribed resources that did not arrive in time.
    pub fn on_tick(&mut self, now: Instant) -> Output {
        let mut out = Output::default();
        let timeout = self.config.resource_timeout;
        for ty in ResourceType::ALL {
            let expired: Vec<String> = self.types[ty.index()]
                .resources
                .iter()
                .filter(|(_, m)| {
                    !m.has_value && !m.missing && m.requested_at.is_some_and(|t| now >= t + timeout)
                })
                .map(|(n, _)| n.clone())
                .collect();
            for name in expired {
                let why = format!("no response from the control plane within {timeout:?}");
                self.missing(ty, &name, &why, &mut out);
            }
        }
        out
    }

    /// When [`Ads::on_tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.config.resource_timeout;
        self.types
            .iter()
            .flat_map(|st| st.resources.values())
            .filter(|m| !m.has_value && !m.missing)
            .filter_map(|m| m.requested_at.map(|t| t + timeout))
            .min()
    }

    /// Every known resource's status, by reference (the cascade walks them after each
    /// response: [`status`](Self::status) would copy tens of thousands of names each time).
    pub fn for_each_status(&self, mut f: impl FnMut(ResourceType, &str, &ResourceStatus)) {
        for ty in ResourceType::ALL {
            for (name, meta) in &self.types[ty.index()].resources {
                f(ty, name, &meta.status);
            }
        }
    }

    /// Status of every subscribed resource, by type and name.
    pub fn status(&self) -> BTreeMap<ResourceType, BTreeMap<String, ResourceStatus>> {
        ResourceType::ALL
            .into_iter()
            .map(|ty| {
                let st = &self.types[ty.index()];
                (
                    ty,
                    st.resources
                        .iter()
                        .map(|(n, m)| (n.clone(), m.status.clone()))
                        .collect(),
                )
            })
            .collect()
    }

    /// The names wanted for a type.
    pub fn wanted(&self, ty: ResourceType) -> &BTreeSet<String> {
        &self.types[ty.index()].wanted
    }
}

mod respond;

#[cfg(test)]
mod fallback_tests;
#[cfg(test)]
mod resend_tests;
#[cfg(test)]
mod tests;

/// The types whose Delta subscriptions are restated in full (see `subscription_request`).
fn restated(ty: ResourceType) -> bool {
    matches!(ty, ResourceType::Listener | ResourceType::Cluster)
}

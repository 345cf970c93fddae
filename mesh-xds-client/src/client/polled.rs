//! What the polled transports (REST-JSON, resource files) keep of their state machine's
//! requests. There is no stream to write requests to: per type, the latest request stands for
//! the subscription (its names, the version it accepted, a NACK's error detail) and is
//! answered when the transport next polls, at once when its names changed (a new
//! subscription, not an ACK). The node goes out on a session's first request only; a polled
//! request stands alone, so it is kept and put on each.

use crate::ads::Request;
use crate::translate::ResourceType;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

#[derive(Debug, Default)]
pub(super) struct Requests {
    latest: [Option<DiscoveryRequest>; 5],
    changed: [bool; 5],
    node: Option<Node>,
}

impl Requests {
    /// Keeps a request from the state machine (SotW only: polled transports speak SotW).
    pub(super) fn take(&mut self, r: Request) {
        let Request::Sotw(r) = r else { return };
        if r.node.is_some() {
            self.node.clone_from(&r.node);
        }
        let Some(ty) = ResourceType::from_type_url(&r.type_url) else {
            return;
        };
        let i = ty.index();
        if self.latest[i].as_ref().map(|l| &l.resource_names) != Some(&r.resource_names) {
            self.changed[i] = true;
        }
        self.latest[i] = Some(r);
    }

    /// Marks every type to be answered again (the resource files changed).
    pub(super) fn mark_all(&mut self) {
        self.changed = [true; 5];
    }

    /// Whether a subscribed type waits to be answered.
    pub(super) fn any_due(&self) -> bool {
        (0..5).any(|i| self.changed[i] && self.latest[i].is_some())
    }

    /// The subscribed types to answer now, in ADS order: every one when `all`, else those
    /// marked; their marks are cleared.
    pub(super) fn due(&mut self, all: bool) -> Vec<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .filter(|ty| {
                let i = ty.index();
                let due = self.latest[i].is_some() && (all || self.changed[i]);
                if due {
                    self.changed[i] = false;
                }
                due
            })
            .collect()
    }

    /// The latest request of `ty`, with the node.
    pub(super) fn request(&self, ty: ResourceType) -> Option<DiscoveryRequest> {
        let mut req = self.latest[ty.index()].clone()?;
        if req.node.is_none() {
            req.node.clone_from(&self.node);
        }
        Some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sotw(ty: ResourceType, names: &[&str], node: bool) -> Request {
        Request::Sotw(DiscoveryRequest {
            type_url: ty.type_url().into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            node: node.then(|| Node {
                id: "n".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn new_names_are_due_at_once_acks_are_not_and_the_node_rides_on_each() {
        let mut r = Requests::default();
        r.take(sotw(ResourceType::Listener, &["web"], true));
        r.take(sotw(ResourceType::Cluster, &["a"], false));
        assert_eq!(
            r.due(false),
            [ResourceType::Listener, ResourceType::Cluster]
        );
        assert!(!r.any_due());
        // An ACK (same names): not due until the next poll of all.
        r.take(sotw(ResourceType::Cluster, &["a"], false));
        assert!(r.due(false).is_empty());
        assert_eq!(r.due(true).len(), 2);
        // New names: due.
        r.take(sotw(ResourceType::Cluster, &["a", "b"], false));
        assert!(r.any_due());
        let req = r.request(ResourceType::Cluster).unwrap();
        assert_eq!(
            req.node.unwrap().id,
            "n",
            "the session's node on every request"
        );
        // A new file set: every subscribed type, none that is not.
        r.mark_all();
        assert_eq!(
            r.due(false),
            [ResourceType::Listener, ResourceType::Cluster]
        );
    }
}

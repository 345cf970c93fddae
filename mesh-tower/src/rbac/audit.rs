//! Audit logging (gRFC A59): a filter configured with a logger and a condition reports its
//! decisions, one event each, to stdout as gRPC's `StdoutAuditLog` does (one JSON line), or to
//! a sink the application gives the engine.

use crate::tls::PeerInfo;
use std::sync::Arc;

/// Where audit events go (default: one JSON line each on stdout, gRPC's `StdoutAuditLog`).
pub type AuditSink = Arc<dyn Fn(&AuditEvent) + Send + Sync>;

/// One audited decision of one RBAC filter (gRFC A59).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    /// The request path (`/pkg.Service/Method` for gRPC).
    pub rpc_method: String,
    /// The caller's authenticated principal (URI SAN, else DNS SAN, else subject; `""`).
    pub principal: String,
    /// The filter's name.
    pub policy_name: String,
    /// The policy that matched, if one did.
    pub matched_rule: String,
    /// Whether this filter let the request through.
    pub authorized: bool,
}

impl AuditEvent {
    /// gRPC's stdout format: `{"grpc_audit_log":{…}}`.
    pub fn to_json_line(&self) -> String {
        serde_json::json!({ "grpc_audit_log": self }).to_string()
    }
}

/// Sends `event` to `sink`, or as a JSON line to stdout.
pub(super) fn emit(sink: Option<&AuditSink>, event: &AuditEvent) {
    match sink {
        Some(sink) => sink(event),
        None => {
            use std::io::Write;
            let _ = writeln!(std::io::stdout().lock(), "{}", event.to_json_line());
        }
    }
}

/// The principal A41 matches, as audit logs show it.
pub(super) fn principal(peer: Option<&PeerInfo>) -> String {
    use mesh_core::config::tls::SanType;
    let Some(id) = peer.and_then(|p| p.identity.as_ref()) else {
        return String::new();
    };
    for kind in [SanType::Uri, SanType::Dns] {
        if let Some(s) = id.sans().iter().find(|s| s.kind == kind) {
            return s.value.clone();
        }
    }
    id.subject().to_owned()
}

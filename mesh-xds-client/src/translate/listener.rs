//! `Listener` (an API listener with an HttpConnectionManager) → [`Listener`].

use super::access_log::access_logs;
use super::policy::{FAULT_TYPE, LOCAL_RATELIMIT_TYPE, fault, local_ratelimit};
use super::{finish, route};
use envoy_types::pb::envoy::config::listener::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use mesh_core::config::listener::HttpFilter;
use mesh_core::error::{Errors, FieldPath};
use mesh_core::{ConfigError, Listener};
use prost::Message;

pub(crate) const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub(crate) const ROUTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// Translates and validates a client listener.
pub fn translate(l: &pb::Listener) -> Result<Listener, ConfigError> {
    translate_in(l, &super::Context::default())
}

/// Translates and validates a client listener in `ctx` (which says what config sources mean).
pub fn translate_in(l: &pb::Listener, ctx: &super::Context) -> Result<Listener, ConfigError> {
    let mut errors = Errors::new();
    let root = FieldPath::root();
    let mut out = Listener {
        name: l.name.clone(),
        rds: None,
        route_config: None,
        http_filters: Vec::new(),
        access_log: Vec::new(),
    };
    let ap = root.field("api_listener");
    let Some(api) = l
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
    else {
        errors.push(&ap, "field not present (clients use API listeners)");
        return finish(out, errors);
    };
    let ap = ap.field("api_listener");
    if api.type_url != HCM_TYPE {
        errors.push(
            &ap,
            format!("expected an HttpConnectionManager, got {:?}", api.type_url),
        );
        return finish(out, errors);
    }
    let manager = match hcm::HttpConnectionManager::decode(&*api.value) {
        Ok(m) => m,
        Err(e) => {
            errors.push(&ap, format!("cannot decode HttpConnectionManager: {e}"));
            return finish(out, errors);
        }
    };
    match &manager.route_specifier {
        Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) => {
            let rp = ap.field("rds");
            match &rds.config_source {
                Some(cs) if is_same_source(cs, ctx) => {}
                Some(_) => errors.push(
                    &rp.field("config_source"),
                    "only ads and self config sources are supported (and files, for resources read from files)",
                ),
                None => errors.push(&rp.field("config_source"), "field not present"),
            }
            out.rds = Some(rds.route_config_name.clone());
        }
        Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
            out.route_config = Some(route::config(rc, &ap.field("route_config"), &mut errors));
        }
        Some(_) => errors.push(&ap, "scoped routes are not supported"),
        None => errors.push(&ap, "a route specifier (rds or route_config) is required"),
    }
    out.http_filters = filters(
        &manager.http_filters,
        &ap.field("http_filters"),
        &mut errors,
    );
    out.access_log = access_logs(&manager.access_log, &ap.field("access_log"), &mut errors);
    if errors.is_empty() {
        out.validate(&root, &mut errors);
    }
    finish(out, errors)
}

/// Whether a referenced resource comes from where the referring one came from: `ads` or
/// `self` (gRPC's rule), or, for resources read from files, a file (`path`,
/// `path_config_source`): the client reads the whole file set, so the file named is one of
/// them (Envoy's file-based configs name their RDS and EDS files this way).
pub(crate) fn is_same_source(
    cs: &envoy_types::pb::envoy::config::core::v3::ConfigSource,
    ctx: &super::Context,
) -> bool {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier as S;
    match cs.config_source_specifier {
        Some(S::Ads(_)) | Some(S::Self_(_)) => true,
        #[allow(deprecated)]
        Some(S::Path(_)) | Some(S::PathConfigSource(_)) => ctx.files,
        _ => false,
    }
}

/// The filter chain must end in the router (gRFC A39); the fault and local rate limit filters
/// are translated; others are refused unless marked optional or disabled.
fn filters(list: &[hcm::HttpFilter], path: &FieldPath, errors: &mut Errors) -> Vec<HttpFilter> {
    let mut out = Vec::new();
    if list.is_empty() {
        errors.push(path, "must not be empty (the router filter is required)");
        return out;
    }
    let last = list.len() - 1;
    for (i, f) in list.iter().enumerate() {
        let fp = path.index(i);
        let typed = match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(any)) => Some(any),
            _ => None,
        };
        let type_url = typed.map(|a| a.type_url.as_str()).unwrap_or("");
        let is_router =
            type_url == ROUTER_TYPE || (typed.is_none() && f.name == "envoy.filters.http.router");
        match (is_router, i == last) {
            (true, true) => {}
            (true, false) => errors.push(&fp, "the router filter must be last"),
            (false, true) => errors.push(&fp, "the last filter must be the router"),
            (false, false) if f.disabled => {}
            (false, false) if type_url == FAULT_TYPE => {
                if let Some(cfg) = typed.and_then(|a| fault(a, &fp.field("typed_config"), errors)) {
                    out.push(HttpFilter {
                        name: f.name.clone(),
                        fault: Some(cfg),
                        local_ratelimit: None,
                    });
                }
            }
            (false, false) if type_url == LOCAL_RATELIMIT_TYPE => {
                if let Some(cfg) =
                    typed.and_then(|a| local_ratelimit(a, &fp.field("typed_config"), errors))
                {
                    out.push(HttpFilter {
                        name: f.name.clone(),
                        fault: None,
                        local_ratelimit: Some(cfg),
                    });
                }
            }
            (false, false) if f.is_optional => {}
            (false, false) => errors.push(
                &fp,
                format!("unsupported HTTP filter {:?} ({type_url})", f.name),
            ),
        }
    }
    out
}

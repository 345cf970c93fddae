//! Compiling one virtual host's routes: matchers, cluster picks, and every per-route policy
//! resolved to what the layers read (route over virtual host over listener).

use super::*;
use mesh_core::config::route::PerFilterConfig;

pub(super) fn compile_vhost(
    rc: &RouteConfig,
    vh: &VirtualHost,
    filters: &[HttpFilter],
) -> Result<VHost, String> {
    let vname: Arc<str> = Arc::from(vh.name.as_str());
    // Listener-level filter state is shared by every route that does not override it.
    let listener_fault = first_fault(filters)
        .map(FaultPolicy::new)
        .transpose()?
        .map(Arc::new);
    let listener_limit = match first_ratelimit(filters) {
        Some(c) => RateLimiter::new(c)?.map(Arc::new),
        None => None,
    };
    let vh_limit = vh_level_limit(vh, filters)?;
    let mut routes = Vec::with_capacity(vh.routes.len());
    for (i, r) in vh.routes.iter().enumerate() {
        let name: Arc<str> = if r.name.is_empty() {
            format!("{}/{i}", vh.name).into()
        } else {
            r.name.as_str().into()
        };
        let ctx = Ctx {
            rc,
            vh,
            filters,
            listener_fault: &listener_fault,
            listener_limit: &listener_limit,
            vh_limit: &vh_limit,
        };
        routes.push(compile_route(&ctx, r, name, vname.clone())?);
    }
    Ok(VHost::new(vname, routes))
}

struct Ctx<'a> {
    rc: &'a RouteConfig,
    vh: &'a VirtualHost,
    filters: &'a [HttpFilter],
    listener_fault: &'a Option<Arc<FaultPolicy>>,
    listener_limit: &'a Option<Arc<RateLimiter>>,
    /// `Some(None)`: the virtual host disables the limiter.
    vh_limit: &'a Option<Option<Arc<RateLimiter>>>,
}

fn first_fault(filters: &[HttpFilter]) -> Option<&mesh_core::policy::HttpFault> {
    filters.iter().find_map(|f| f.fault.as_ref())
}

fn first_ratelimit(filters: &[HttpFilter]) -> Option<&mesh_core::policy::LocalRateLimit> {
    filters.iter().find_map(|f| f.local_ratelimit.as_ref())
}

/// The name of the first filter of a kind (overrides are keyed by it).
fn filter_name(filters: &[HttpFilter], fault: bool) -> Option<&str> {
    filters
        .iter()
        .find(|f| {
            if fault {
                f.fault.is_some()
            } else {
                f.local_ratelimit.is_some()
            }
        })
        .map(|f| f.name.as_str())
}

fn vh_level_limit(
    vh: &VirtualHost,
    filters: &[HttpFilter],
) -> Result<Option<Option<Arc<RateLimiter>>>, String> {
    let Some(name) = filter_name(filters, false) else {
        return Ok(None);
    };
    match vh.typed_per_filter_config.get(name) {
        Some(o) if o.disabled => Ok(Some(None)),
        Some(o) => match &o.local_ratelimit {
            Some(c) => Ok(Some(RateLimiter::new(c)?.map(Arc::new))),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

/// The override for the filter named `name`: the route's, else the virtual host's.
fn override_for<'a>(
    name: &str,
    route: &'a PerFilterConfig,
    vh: &'a PerFilterConfig,
) -> Option<&'a mesh_core::config::listener::FilterConfig> {
    route.get(name).or_else(|| vh.get(name))
}

fn compile_route(
    ctx: &Ctx<'_>,
    r: &Route,
    name: Arc<str>,
    vname: Arc<str>,
) -> Result<CompiledRoute, String> {
    let m = &r.matcher;
    let matcher = compile_match(m)?;
    let matched = match m.path_match() {
        Some(PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::SeparatedPrefix(p)) => Some(p),
        _ => None,
    };

    let (vh, rc) = (ctx.vh, ctx.rc);
    let mut info = RoutePolicy::to_cluster("", "", None);
    info.name = name;
    info.virtual_host = vname;
    info.buffer_limit = r
        .per_request_buffer_limit_bytes
        .or(vh.per_request_buffer_limit_bytes)
        .unwrap_or(DEFAULT_BUFFER_LIMIT) as usize;
    let levels = [r.mutations(), vh.mutations(), rc.mutations()];
    match r.kind().ok_or("route has no action")? {
        RouteKind::Redirect(rd) => {
            info.local = Some(Arc::new(LocalAnswer::redirect(rd, matched)?));
            info.clusters = ClusterPick::None;
        }
        RouteKind::Direct(d) => {
            info.local = Some(Arc::new(LocalAnswer::direct(d)?));
            info.clusters = ClusterPick::None;
        }
        RouteKind::Forward(action) => {
            info.timeout = action.effective_timeout();
            info.idle_timeout = action.idle_timeout.filter(|d| !d.is_zero());
            info.grpc_timeout = action.max_stream_duration.as_ref().and_then(|msd| {
                msd.grpc_timeout_header_max.map(|max| {
                    (
                        (!max.is_zero()).then_some(max),
                        msd.grpc_timeout_header_offset.unwrap_or_default(),
                    )
                })
            });
            info.grpc_limit = action.max_stream_duration.as_ref().and_then(|m| {
                m.grpc_timeout_header_max
                    .or(m.max_stream_duration)
                    .filter(|d| !d.is_zero())
            });
            info.clusters = cluster_pick(action)?;
            info.hash_policy = crate::route::hash::HashPolicy::new(&action.hash_policy)?;
            let retry = action.retry_policy.as_ref().or(vh.retry_policy.as_ref());
            let hedge = action.hedge_policy.as_ref().or(vh.hedge_policy.as_ref());
            info.retry = retry
                .map(|p| RetryPolicy::new(p, hedge, Some(info.buffer_limit as u32)))
                .transpose()?
                .map(Arc::new);
            let path_rw = match (&action.prefix_rewrite, &action.regex_rewrite) {
                (Some(p), _) => Some(PathRewrite::prefix(matched, p)),
                (None, Some(rr)) => Some(PathRewrite::regex(rr)?),
                (None, None) => None,
            };
            let host = action
                .host_rewrite_literal
                .as_deref()
                .map(http::uri::Authority::try_from)
                .transpose()
                .map_err(|e| e.to_string())?;
            let rewrite = Rewrite {
                path: path_rw,
                host,
                headers: Mutations::compile(&levels)?,
            };
            info.rewrite = (!rewrite.is_empty()).then(|| Arc::new(rewrite));
            info.mirrors = action
                .request_mirror_policies
                .iter()
                .map(|p| MirrorPolicy {
                    cluster: p.cluster.as_str().into(),
                    fraction: p.runtime_fraction.as_ref().map(|f| f.default_value),
                })
                .collect();
        }
    }
    if info.rewrite.is_none() && info.local.is_some() {
        // Local answers still get response header mutations.
        let headers = Mutations::compile(&levels)?;
        if !headers.is_empty() {
            info.rewrite = Some(Arc::new(Rewrite {
                headers,
                ..Rewrite::default()
            }));
        }
    }
    // Filters: the route's override, else the virtual host's, else the listener's config.
    if let Some(fname) = filter_name(ctx.filters, true) {
        info.fault = match override_for(
            fname,
            &r.typed_per_filter_config,
            &vh.typed_per_filter_config,
        ) {
            Some(o) if o.disabled => None,
            Some(o) => match &o.fault {
                Some(f) => Some(Arc::new(FaultPolicy::new(f)?)),
                None => ctx.listener_fault.clone(),
            },
            None => ctx.listener_fault.clone(),
        };
    }
    if let Some(lname) = filter_name(ctx.filters, false) {
        info.rate_limit = match r.typed_per_filter_config.get(lname) {
            Some(o) if o.disabled => None,
            Some(o) if o.local_ratelimit.is_some() => {
                RateLimiter::new(o.local_ratelimit.as_ref().expect("checked"))?.map(Arc::new)
            }
            _ => match ctx.vh_limit {
                Some(vh_level) => vh_level.clone(),
                None => ctx.listener_limit.clone(),
            },
        };
    }
    Ok(CompiledRoute {
        info: Arc::new(info),
        matcher,
    })
}

/// Compiles a (validated) route match.
pub(crate) fn compile_match(m: &RouteMatch) -> Result<RequestMatcher, String> {
    let cs = m.case_sensitive;
    let fold = |s: &str| {
        if cs {
            s.to_owned()
        } else {
            s.to_ascii_lowercase()
        }
    };
    let path = match m.path_match().ok_or("invalid path match")? {
        PathMatch::Prefix(p) => PathMatcher::Prefix(fold(p), cs),
        PathMatch::Exact(p) => PathMatcher::Exact(fold(p), cs),
        PathMatch::SeparatedPrefix(p) => PathMatcher::Separated(fold(p), cs),
        PathMatch::Regex(re) => PathMatcher::Regex(full_regex(re)?),
    };
    Ok(RequestMatcher {
        path,
        headers: m
            .headers
            .iter()
            .map(compile_header)
            .collect::<Result<_, _>>()?,
        query: m
            .query_parameters
            .iter()
            .map(compile_query)
            .collect::<Result<_, _>>()?,
        fraction: m.runtime_fraction.as_ref().map(|f| f.default_value),
        grpc: m.grpc.is_some(),
    })
}

fn cluster_pick(action: &mesh_core::RouteAction) -> Result<ClusterPick, String> {
    Ok(
        match action
            .cluster_specifier()
            .ok_or("invalid cluster specifier")?
        {
            ClusterSpecifier::Cluster(c) => ClusterPick::One(c.into()),
            ClusterSpecifier::Header(h) => {
                ClusterPick::Header(HeaderName::try_from(h).map_err(|e| e.to_string())?)
            }
            ClusterSpecifier::Weighted(w) => {
                let mut sum = 0u64;
                let mut cum = Vec::with_capacity(w.clusters.len());
                for c in w.clusters.iter().filter(|c| c.weight > 0) {
                    sum += u64::from(c.weight);
                    let m = Mutations::compile(&[c.mutations()])?;
                    cum.push((
                        sum,
                        Arc::from(c.name.as_str()),
                        (!m.is_empty()).then(|| Arc::new(m)),
                    ));
                }
                if cum.is_empty() {
                    return Err("weighted_clusters has no positive weight".into());
                }
                ClusterPick::Weighted(cum)
            }
        },
    )
}

fn compile_query(q: &QueryParameterMatcher) -> Result<QueryRule, String> {
    let kind = match &q.string_match {
        Some(s) => {
            let as_header = HeaderMatcher {
                name: "q".into(),
                string_match: Some(s.clone()),
                ..HeaderMatcher::default()
            };
            Some(compile_header(&as_header)?.kind)
        }
        None => None,
    };
    Ok(QueryRule {
        name: q.name.clone(),
        kind,
        present: q.present_match.unwrap_or(true),
    })
}

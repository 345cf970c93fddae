//! Federation (gRFC A47): the name of a resource says which control plane serves it.
//!
//! A new-style name is a URI, `xdstp://{authority}/{type}/{id}?{context params}`. Its
//! authority is looked up in the bootstrap's `authorities`, whose `xds_servers` (or, when that
//! list is empty, the top-level ones) serve it. Old-style names (`web`, `outbound|80||a.b`) go to
//! the top-level servers. One control plane can so hand a client over to another for some of
//! the resources its own ones reference (a route naming `xdstp://team-b/…Cluster/api`), and
//! names of different authorities never collide.
//!
//! Distinct servers get one ADS stream each; authorities naming the same server share it.
//! Context parameters are compared in sorted order (`?b=2&a=1` is `?a=1&b=2`), as the xRFC
//! TP1 says, so a server may echo them in any order.

use crate::bootstrap::{Bootstrap, XdsServer};
use crate::translate::ResourceType;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The scheme of new-style names.
pub const XDSTP: &str = "xdstp://";

/// The parts of an `xdstp://` name.
///
/// ```
/// use mesh_xds_client::federation::XdstpName;
/// let n = XdstpName::parse("xdstp://team-b/envoy.config.cluster.v3.Cluster/api?env=prod")
///     .expect("a new-style name")?;
/// assert_eq!((n.authority, n.id, n.params), ("team-b", "api", Some("env=prod")));
/// assert!(XdstpName::parse("web").is_none());
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdstpName<'a> {
    /// Which authority serves it.
    pub authority: &'a str,
    /// The resource type, as a proto message name (`envoy.config.cluster.v3.Cluster`).
    pub type_name: &'a str,
    /// The id (may contain `/`).
    pub id: &'a str,
    /// The context parameters, unsorted, without the `?`.
    pub params: Option<&'a str>,
}

impl<'a> XdstpName<'a> {
    /// Parses a name: `None` for an old-style name, an error for a malformed `xdstp:` one.
    pub fn parse(name: &'a str) -> Option<Result<Self, String>> {
        let rest = name.strip_prefix(XDSTP)?;
        let Some((authority, path)) = rest.split_once('/') else {
            return Some(Err(format!(
                "{name:?}: no resource type after the authority"
            )));
        };
        let (path, params) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let Some((type_name, id)) = path.split_once('/') else {
            return Some(Err(format!("{name:?}: no resource id after the type")));
        };
        if type_name.is_empty() {
            return Some(Err(format!("{name:?}: empty resource type")));
        }
        Some(Ok(Self {
            authority,
            type_name,
            id,
            params,
        }))
    }
}

/// The proto message name a resource type has in `xdstp:` names.
pub fn type_name(ty: ResourceType) -> &'static str {
    ty.type_url()
        .strip_prefix("type.googleapis.com/")
        .unwrap_or(ty.type_url())
}

/// The name with its context parameters sorted; borrowed when nothing changes (old-style
/// names, or `xdstp:` names with at most one parameter).
pub fn canonical(name: &str) -> Cow<'_, str> {
    let Some((base, query)) = name.strip_prefix(XDSTP).and_then(|_| name.split_once('?')) else {
        return Cow::Borrowed(name);
    };
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if params.windows(2).all(|w| w[0] <= w[1]) && params.len() == query.split('&').count() {
        return Cow::Borrowed(name);
    }
    params.sort_unstable();
    Cow::Owned(format!("{base}?{}", params.join("&")))
}

/// Which ADS stream serves which names.
///
/// ```
/// use mesh_xds_client::bootstrap::Bootstrap;
/// use mesh_xds_client::federation::Routing;
/// use mesh_xds_client::translate::ResourceType;
///
/// let b = Bootstrap::from_json(r#"{
///   "xds_servers": [{"server_uri": "platform:1", "channel_creds": [{"type": "insecure"}]}],
///   "authorities": {"team-b": {"xds_servers": [{"server_uri": "team-b:1",
///                                               "channel_creds": [{"type": "insecure"}]}]}}
/// }"#)?;
/// let routing = Routing::new(&b);
/// assert_eq!(routing.server_for(ResourceType::Cluster, "web"), Ok(0));
/// let api = "xdstp://team-b/envoy.config.cluster.v3.Cluster/api";
/// assert_eq!(routing.servers()[routing.server_for(ResourceType::Cluster, api)?].server_uri, "team-b:1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// Distinct servers; `[0]` is the top-level one.
    servers: Vec<XdsServer>,
    /// Each server's fallbacks (gRFC A71): the rest of the `xds_servers` list it heads.
    fallbacks: Vec<Vec<XdsServer>>,
    /// Authority → index into `servers`.
    authorities: BTreeMap<String, usize>,
}

impl Routing {
    /// From a checked bootstrap: each authority uses its first server (the top-level one when
    /// it names none), the others of its list as fallbacks; equal first servers are one
    /// stream.
    pub fn new(bootstrap: &Bootstrap) -> Self {
        let mut servers = vec![bootstrap.xds_servers[0].clone()];
        let mut fallbacks = vec![bootstrap.xds_servers[1..].to_vec()];
        let mut authorities = BTreeMap::new();
        for (name, authority) in &bootstrap.authorities {
            let list = match authority.xds_servers.is_empty() {
                true => &bootstrap.xds_servers,
                false => &authority.xds_servers,
            };
            let index = match servers.iter().position(|s| *s == list[0]) {
                Some(i) => i,
                None => {
                    servers.push(list[0].clone());
                    fallbacks.push(list[1..].to_vec());
                    servers.len() - 1
                }
            };
            authorities.insert(name.clone(), index);
        }
        Self {
            servers,
            fallbacks,
            authorities,
        }
    }

    /// The distinct servers, in stream order.
    pub fn servers(&self) -> &[XdsServer] {
        &self.servers
    }

    /// The fallbacks of stream `index`'s server, in order (gRFC A71: used while it is
    /// unreachable and a wanted resource has no cached copy). A stream shared by several
    /// authorities with the same first server takes the first list seen.
    pub fn fallbacks(&self, index: usize) -> &[XdsServer] {
        self.fallbacks.get(index).map_or(&[], Vec::as_slice)
    }

    /// The stream that serves `name` of type `ty`, or why none can.
    pub fn server_for(&self, ty: ResourceType, name: &str) -> Result<usize, String> {
        let Some(parsed) = XdstpName::parse(name) else {
            return Ok(0);
        };
        let parsed = parsed?;
        if parsed.type_name != type_name(ty) {
            return Err(format!(
                "{name:?} names type {:?} where a {} is expected",
                parsed.type_name,
                type_name(ty)
            ));
        }
        self.authorities
            .get(parsed.authority)
            .copied()
            .ok_or_else(|| {
                format!(
                    "{name:?}: authority {:?} is not in the bootstrap's authorities",
                    parsed.authority
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap() -> Bootstrap {
        Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "top:1", "channel_creds": [{"type": "insecure"}]}],
                "authorities": {
                  "b": {"xds_servers": [{"server_uri": "b:1", "channel_creds": [{"type": "insecure"}]}]},
                  "b2": {"xds_servers": [{"server_uri": "b:1", "channel_creds": [{"type": "insecure"}]}]},
                  "same": {}
                }}"#,
        )
        .unwrap()
    }

    #[test]
    fn names_pick_their_authoritys_server() {
        let r = Routing::new(&bootstrap());
        let uris: Vec<&str> = r.servers().iter().map(|s| s.server_uri.as_str()).collect();
        assert_eq!(uris, ["top:1", "b:1"], "equal servers share one stream");
        let cluster = ResourceType::Cluster;
        assert_eq!(r.server_for(cluster, "web"), Ok(0), "old-style: top level");
        assert_eq!(
            r.server_for(cluster, "xdstp://b/envoy.config.cluster.v3.Cluster/web"),
            Ok(1)
        );
        assert_eq!(
            r.server_for(
                cluster,
                "xdstp://b2/envoy.config.cluster.v3.Cluster/a/b?x=1"
            ),
            Ok(1)
        );
        assert_eq!(
            r.server_for(cluster, "xdstp://same/envoy.config.cluster.v3.Cluster/web"),
            Ok(0),
            "an authority without servers uses the top-level ones"
        );
        let err = r
            .server_for(cluster, "xdstp://nope/envoy.config.cluster.v3.Cluster/web")
            .unwrap_err();
        assert!(
            err.contains("authority \"nope\" is not in the bootstrap"),
            "{err}"
        );
        let err = r
            .server_for(cluster, "xdstp://b/envoy.config.listener.v3.Listener/web")
            .unwrap_err();
        assert!(
            err.contains("where a envoy.config.cluster.v3.Cluster is expected"),
            "{err}"
        );
        for bad in ["xdstp://b", "xdstp://b/envoy.config.cluster.v3.Cluster"] {
            assert!(r.server_for(cluster, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn context_params_compare_sorted() {
        let n = "xdstp://a/envoy.config.cluster.v3.Cluster/x?b=2&a=1";
        assert_eq!(
            canonical(n),
            "xdstp://a/envoy.config.cluster.v3.Cluster/x?a=1&b=2"
        );
        let sorted = "xdstp://a/envoy.config.cluster.v3.Cluster/x?a=1&b=2";
        assert!(matches!(canonical(sorted), Cow::Borrowed(_)));
        assert!(matches!(canonical("plain?b&a"), Cow::Borrowed(_)));
        let parsed = XdstpName::parse(n).unwrap().unwrap();
        assert_eq!(
            (parsed.authority, parsed.id, parsed.params),
            ("a", "x", Some("b=2&a=1"))
        );
    }
}

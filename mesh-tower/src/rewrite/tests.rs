//! Path and host rewrites and header mutation order.

use super::*;
use crate::body::MeshBody;
use crate::route::RoutePolicy;
use crate::test_util::{BoxFut, request, response, service};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, header};
use mesh_core::config::headers::{AppendAction, HeaderMutations};
use mesh_core::config::headers::{HeaderValue as Hv, HeaderValueOption};
use mesh_core::config::route::RegexMatchAndSubstitute;
use mesh_core::config::route::RegexMatcher;
use std::sync::Arc;
use std::sync::Mutex;

fn add(key: &str, value: &str, action: AppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Hv {
            key: key.into(),
            value: value.into(),
        },
        append_action: action,
        keep_empty_value: false,
    }
}

#[test]
fn prefix_and_regex_rewrites() {
    let p = PathRewrite::prefix(Some("/api"), "/v2");
    assert_eq!(p.apply("/api/users"), "/v2/users");
    let p = PathRewrite::prefix(Some("/api/"), "/");
    assert_eq!(p.apply("/api/users"), "/users");
    let r = PathRewrite::regex(&RegexMatchAndSubstitute {
        pattern: RegexMatcher {
            regex: "^/service/([^/]+)(/.*)$".into(),
        },
        substitution: "\\2/instance/\\1".into(),
    })
    .unwrap();
    assert_eq!(r.apply("/service/foo/v1/api"), "/v1/api/instance/foo");
    let dollar = PathRewrite::regex(&RegexMatchAndSubstitute {
        pattern: RegexMatcher { regex: "a".into() },
        substitution: "$b".into(),
    })
    .unwrap();
    assert_eq!(dollar.apply("/a"), "/$b", "a literal $ stays literal");
}

#[test]
fn levels_apply_in_envoy_order_with_the_outer_overwrite_winning() {
    let route_add = [add("x-a", "route", AppendAction::OverwriteIfExistsOrAdd)];
    let vh_add = [
        add("x-a", "vhost", AppendAction::OverwriteIfExistsOrAdd),
        add("x-b", "vhost", AppendAction::AddIfAbsent),
        add("x-c", "vhost", AppendAction::AppendIfExistsOrAdd),
        add("x-d", "vhost", AppendAction::OverwriteIfExists),
        add("x-e", "", AppendAction::AppendIfExistsOrAdd),
    ];
    let remove = ["x-drop".to_owned()];
    let m = Mutations::compile(&[
        HeaderMutations {
            request_add: &route_add,
            request_remove: &remove,
            ..Default::default()
        },
        HeaderMutations {
            request_add: &vh_add,
            ..Default::default()
        },
    ])
    .unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-b", HeaderValue::from_static("caller"));
    h.insert("x-c", HeaderValue::from_static("caller"));
    h.insert("x-drop", HeaderValue::from_static("1"));
    m.request.apply(&mut h);
    assert_eq!(h["x-a"], "vhost");
    assert_eq!(h["x-b"], "caller");
    let c: Vec<_> = h.get_all("x-c").iter().collect();
    assert_eq!(c, ["caller", "vhost"]);
    assert!(!h.contains_key("x-d"), "overwrite-if-exists does not add");
    assert!(!h.contains_key("x-e"), "empty values are skipped");
    assert!(!h.contains_key("x-drop"));
}

#[tokio::test]
async fn the_service_rewrites_requests_and_mutates_responses() {
    let resp_add = [add(
        "x-served",
        "mesh",
        AppendAction::OverwriteIfExistsOrAdd,
    )];
    let resp_remove = ["server".to_owned()];
    let mut info = RoutePolicy::to_cluster("r", "c", None);
    info.rewrite = Some(Arc::new(Rewrite {
        path: Some(PathRewrite::prefix(Some("/api"), "/internal")),
        host: Some(Authority::from_static("backend.local")),
        headers: Mutations::compile(&[HeaderMutations {
            response_add: &resp_add,
            response_remove: &resp_remove,
            ..Default::default()
        }])
        .unwrap(),
    }));
    let info = Arc::new(info);
    let seen = Arc::new(Mutex::new(None));
    let log = seen.clone();
    let mut svc = RewriteService::new(service(move |req: Request<()>| -> BoxFut {
        *log.lock().unwrap() = Some((req.uri().to_string(), req.headers()[header::HOST].clone()));
        Box::pin(async {
            let mut r: Response<MeshBody> = response(200, 1);
            r.headers_mut()
                .insert("server", HeaderValue::from_static("x"));
            Ok(r)
        })
    }));
    let res = svc
        .call(request(&info, "/api/users?id=7", ()))
        .await
        .unwrap();
    let (uri, host) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(uri, "http://backend.local/internal/users?id=7");
    assert_eq!(host, "backend.local");
    assert_eq!(res.headers()["x-served"], "mesh");
    assert!(!res.headers().contains_key("server"));
}

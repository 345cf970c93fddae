//! Redirect locations and direct responses, for HTTP and gRPC callers.

use super::*;
use http::header;
use mesh_core::config::route::{
    DataSource, RedirectResponseCode, RegexMatchAndSubstitute, RegexMatcher,
};
use mesh_core::config::route::{DirectResponseAction, RedirectAction};

fn req(uri: &str) -> Request<()> {
    Request::builder().uri(uri).body(()).unwrap()
}

fn location(r: RedirectAction, matched: Option<&str>, uri: &str) -> (u16, String) {
    let answer = LocalAnswer::redirect(&r, matched).unwrap();
    let res = answer.respond(&req(uri));
    let loc = res.headers()[header::LOCATION].to_str().unwrap().to_owned();
    (res.status().as_u16(), loc)
}

#[test]
fn redirect_locations_follow_envoy() {
    let uri = "http://web:8080/old/page?q=1";
    let cases = [
        (
            RedirectAction::default(),
            (301, "http://web:8080/old/page?q=1"),
        ),
        (
            RedirectAction {
                path_redirect: Some("/new".into()),
                response_code: RedirectResponseCode::Found,
                ..Default::default()
            },
            (302, "http://web:8080/new?q=1"),
        ),
        (
            RedirectAction {
                path_redirect: Some("/new?x=2".into()),
                ..Default::default()
            },
            (301, "http://web:8080/new?x=2"),
        ),
        (
            RedirectAction {
                prefix_rewrite: Some("/v2".into()),
                strip_query: true,
                ..Default::default()
            },
            (301, "http://web:8080/v2/page"),
        ),
        (
            RedirectAction {
                https_redirect: true,
                ..Default::default()
            },
            (301, "https://web/old/page?q=1"),
        ),
        (
            RedirectAction {
                host_redirect: Some("other".into()),
                port_redirect: Some(9000),
                response_code: RedirectResponseCode::PermanentRedirect,
                ..Default::default()
            },
            (308, "http://other:9000/old/page?q=1"),
        ),
        (
            RedirectAction {
                regex_rewrite: Some(RegexMatchAndSubstitute {
                    pattern: RegexMatcher {
                        regex: "^/old/(.*)$".into(),
                    },
                    substitution: "/archive/\\1".into(),
                }),
                response_code: RedirectResponseCode::TemporaryRedirect,
                ..Default::default()
            },
            (307, "http://web:8080/archive/page?q=1"),
        ),
    ];
    for (action, (status, want)) in cases {
        assert_eq!(
            location(action.clone(), Some("/old"), uri),
            (status, want.to_owned()),
            "{action:?}"
        );
    }
}

#[test]
fn direct_responses_answer_http_with_the_body_and_grpc_with_a_status() {
    let d = DirectResponseAction {
        status: 503,
        body: Some(DataSource {
            inline_string: "maintenance".into(),
        }),
    };
    let answer = LocalAnswer::direct(&d).unwrap();
    let res = answer.respond(&req("http://web/"));
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/plain");

    let grpc_req = Request::builder()
        .uri("http://web/pkg.Svc/Method")
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(())
        .unwrap();
    let res = answer.respond(&grpc_req);
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["grpc-status"],
        "14",
        "503 maps to UNAVAILABLE"
    );
    assert_eq!(res.headers()["grpc-message"], "maintenance");
}

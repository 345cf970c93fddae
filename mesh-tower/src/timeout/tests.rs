use super::*;
use crate::ErrorKind;
use tokio_test::{assert_pending, assert_ready};
use tower_test::mock;

type Mock = mock::Mock<Request<()>, &'static str>;

fn svc(default: Option<Duration>) -> (Timeout<Mock>, mock::Handle<Request<()>, &'static str>) {
    let (inner, handle) = mock::pair();
    (Timeout::new(inner, default), handle)
}

async fn ready(svc: &mut Timeout<Mock>) {
    futures_util::future::poll_fn(|cx| svc.poll_ready(cx))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn fires_after_the_limit_and_not_before() {
    let (mut svc, mut handle) = svc(Some(Duration::from_secs(2)));
    ready(&mut svc).await;
    let mut fut = tokio_test::task::spawn(svc.call(Request::new(())));
    let _req = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_millis(1)).await;
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn a_prompt_response_passes() {
    let (mut svc, mut handle) = svc(Some(Duration::from_secs(2)));
    ready(&mut svc).await;
    let fut = svc.call(Request::new(()));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response("ok");
    assert_eq!(fut.await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn none_never_fires() {
    let (mut svc, mut handle) = svc(None);
    ready(&mut svc).await;
    let mut fut = tokio_test::task::spawn(svc.call(Request::new(())));
    let _req = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_pending!(fut.poll());
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_with_their_kind() {
    let (mut svc, mut handle) = svc(Some(Duration::from_secs(2)));
    ready(&mut svc).await;
    let fut = svc.call(Request::new(()));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(MeshError::new(ErrorKind::Connect, "refused"));
    assert_eq!(fut.await.unwrap_err().kind(), ErrorKind::Connect);
}

#[tokio::test(start_paused = true)]
async fn the_route_decision_overrides_the_default() {
    use crate::route::{RouteDecision, RoutePolicy};
    use std::sync::Arc;
    let (mut svc, mut handle) = svc(Some(Duration::from_secs(60)));
    ready(&mut svc).await;
    let mut req = Request::new(());
    let route = RoutePolicy::to_cluster("r", "c", Some(Duration::from_millis(100)));
    req.extensions_mut().insert(RouteDecision {
        target: "t".into(),
        route: Arc::new(route),
        cluster: "c".into(),
        cluster_headers: None,
        hash: None,
    });
    let mut fut = tokio_test::task::spawn(svc.call(req));
    let _req = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_millis(100)).await;
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("100ms"), "{err}");
}

//! gRPC's wait-for-ready on mesh channels: a call made while the target cannot serve it waits
//! for the config to come back instead of failing at once, and goes out when it does.

mod support;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::{ChannelOptions, ErrorKind, ServedBy, WaitForReady};
use support::{PATIENCE, counting_mesh, push, web_config};
use tower::{Service, ServiceExt};

fn get() -> http::Request<Empty<Bytes>> {
    http::Request::get("/").body(Empty::new()).unwrap()
}

#[tokio::test]
async fn a_waiting_call_is_sent_when_endpoints_come_back() {
    let backend = Backend::start().await.unwrap();
    let (mesh, store, _) = counting_mesh(&web_config(&[], "HTTP1")).await;
    let options = ChannelOptions::default().wait_for_ready(true);
    let mut waiting = mesh.channel_with::<Empty<Bytes>>("xds:///web", options);
    let plain = mesh.channel::<Empty<Bytes>>("xds:///web");

    // In the gap, a plain call fails at once and a wait-for-ready call waits.
    let err = plain.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoEndpoint);
    let mut call = Box::pin(waiting.ready().await.unwrap().call(get()));
    assert!((&mut call).now_or_never().is_none(), "the call waits");

    // The endpoint comes back: the waiting call goes out and is served.
    push(&store, &web_config(&[backend.addr()], "HTTP1"));
    let res = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("served after the endpoint came back")
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.extensions().get::<ServedBy>().unwrap().endpoint,
        backend.addr()
    );
    assert_eq!(backend.served(), 1);
}

#[tokio::test]
async fn a_per_call_wait_for_ready_on_a_plain_channel_waits_too() {
    let backend = Backend::start().await.unwrap();
    let (mesh, store, _) = counting_mesh(&web_config(&[], "HTTP1")).await;
    let mut plain = mesh.channel::<Empty<Bytes>>("xds:///web");
    let mut req = get();
    req.extensions_mut().insert(WaitForReady(true));
    let mut call = Box::pin(plain.ready().await.unwrap().call(req));
    assert!((&mut call).now_or_never().is_none(), "the call waits");
    push(&store, &web_config(&[backend.addr()], "HTTP1"));
    let res = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
}

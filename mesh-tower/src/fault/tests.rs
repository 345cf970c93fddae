//! Fault percentages (seeded), delays with paused time, header control and the active cap.

use super::*;
use crate::route::RoutePolicy;
use crate::server::PerRoute;
use crate::test_util::{BoxFut, request, response, service};
use mesh_core::policy::{Empty, FaultAbort, FaultDelay};
use mesh_core::policy::{FractionalPercent, HttpFault};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn info(f: HttpFault) -> Arc<RoutePolicy> {
    let mut i = RoutePolicy::to_cluster("r", "c", None);
    i.fault = Some(Arc::new(FaultPolicy::new(&f).unwrap()));
    Arc::new(i)
}

fn ok_service()
-> impl Service<Request<()>, Response = Response<MeshBody>, Error = MeshError, Future = BoxFut> + Clone
{
    service(|_: Request<()>| -> BoxFut { Box::pin(async { Ok(response(200, 1)) }) })
}

fn abort(pct: FractionalPercent) -> HttpFault {
    HttpFault {
        abort: Some(FaultAbort {
            http_status: Some(503),
            percentage: Some(pct),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn abort_percentage_is_respected_within_statistical_bounds() {
    let info = info(abort(FractionalPercent::percent(50)));
    let mut svc = Fault::new(ok_service(), Some(42));
    let mut aborted = 0;
    for _ in 0..4000 {
        let res = svc.call(request(&info, "/", ())).await.unwrap();
        if res.status() == 503 {
            assert!(res.extensions().get::<FaultInjected>().is_some());
            aborted += 1;
        }
    }
    // Binomial(4000, 0.5): sd ≈ 31.6; ±4 sd.
    assert!((1874..=2126).contains(&aborted), "{aborted}");

    let tenth_of_a_percent = info_with_denominator();
    let mut hits = 0;
    for _ in 0..20_000 {
        if svc
            .call(request(&tenth_of_a_percent, "/", ()))
            .await
            .unwrap()
            .status()
            == 503
        {
            hits += 1;
        }
    }
    // 10/10000 of 20000 = 20; Poisson sd ≈ 4.5.
    assert!((3..=40).contains(&hits), "{hits}");
}

fn info_with_denominator() -> Arc<RoutePolicy> {
    info(abort(FractionalPercent {
        numerator: 10,
        denominator: mesh_core::policy::DenominatorType::TenThousand,
    }))
}

#[tokio::test(start_paused = true)]
async fn a_delay_holds_the_request_then_forwards_it() {
    let info = info(HttpFault {
        delay: Some(FaultDelay {
            fixed_delay: Some(Duration::from_secs(2)),
            ..Default::default()
        }),
        max_active_faults: Some(1),
        ..Default::default()
    });
    let policy = info.fault.clone().unwrap();
    let mut svc = Fault::new(ok_service(), Some(1));
    let start = Instant::now();
    let first = tokio::spawn(svc.call(request(&info, "/", ())));
    tokio::task::yield_now().await;
    assert_eq!(policy.active(), 1);
    // Over max_active_faults: no fault for this one.
    let second = svc.call(request(&info, "/", ())).await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(start.elapsed(), Duration::ZERO);
    let res = first.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(policy.active(), 0);
}

#[tokio::test(start_paused = true)]
async fn header_controlled_faults() {
    let info = info(HttpFault {
        delay: Some(FaultDelay {
            header_delay: Some(Empty {}),
            ..Default::default()
        }),
        abort: Some(FaultAbort {
            header_abort: Some(Empty {}),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut svc = Fault::new(ok_service(), Some(1));
    // No headers: no fault.
    assert_eq!(
        svc.call(request(&info, "/", ())).await.unwrap().status(),
        200
    );

    let mut req = request(&info, "/", ());
    req.headers_mut()
        .insert("x-envoy-fault-abort-request", "429".parse().unwrap());
    req.headers_mut()
        .insert("x-envoy-fault-delay-request", "150".parse().unwrap());
    let start = Instant::now();
    assert_eq!(svc.call(req).await.unwrap().status(), 429);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(150),
        "delay, then abort"
    );

    let mut req = request(&info, "/", ());
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    req.headers_mut()
        .insert("x-envoy-fault-abort-grpc-request", "14".parse().unwrap());
    let res = svc.call(req).await.unwrap();
    assert_eq!(
        (
            res.status().as_u16(),
            res.headers()["grpc-status"].to_str().unwrap()
        ),
        (200, "14")
    );

    let mut req = request(&info, "/", ());
    req.headers_mut()
        .insert("x-envoy-fault-abort-request", "503".parse().unwrap());
    req.headers_mut().insert(
        "x-envoy-fault-abort-request-percentage",
        "0".parse().unwrap(),
    );
    assert_eq!(
        svc.call(req).await.unwrap().status(),
        200,
        "the header can lower the share"
    );
}

#[tokio::test]
async fn grpc_callers_get_grpc_statuses() {
    let info = info(HttpFault {
        abort: Some(FaultAbort {
            grpc_status: Some(8),
            ..Default::default()
        }),
        headers: vec![mesh_core::config::route::HeaderMatcher {
            name: "x-chaos".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut svc = Fault::new(ok_service(), Some(1));
    assert_eq!(
        svc.call(request(&info, "/", ())).await.unwrap().status(),
        200,
        "header matcher"
    );
    let mut req = request(&info, "/", ());
    req.headers_mut().insert("x-chaos", "1".parse().unwrap());
    let res = svc.call(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "8");
}

/// The server side's layer: a fixed delay holds the request (the handler is not called until
/// it has passed), then the handler answers; a gRPC abort answers locally.
#[tokio::test(start_paused = true)]
async fn the_inbound_layer_delays_then_calls_and_aborts_without_the_handler() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;
    let delay = HttpFault {
        delay: Some(FaultDelay {
            fixed_delay: Some(Duration::from_secs(3)),
            percentage: Some(FractionalPercent::percent(100)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let policy = Arc::new(arc_swap::ArcSwap::from_pointee(PerRoute::uniform(Some(
        FaultPolicy::new(&delay).unwrap(),
    ))));
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let handler = tower::service_fn(move |_: Request<()>| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, std::convert::Infallible>(Response::new(
                http_body_util::Empty::<bytes::Bytes>::new(),
            ))
        }
    });
    let svc = tower_layer::Layer::layer(&InboundFaultLayer::live(policy.clone()), handler);
    let call = || {
        svc.clone()
            .oneshot(Request::get("http://svc/x").body(()).unwrap())
    };
    let start = Instant::now();
    let res = call().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "held for the delay"
    );
    assert_eq!(called.load(Ordering::SeqCst), 1);

    policy.store(Arc::new(PerRoute::uniform(Some(
        FaultPolicy::new(&HttpFault {
            abort: Some(FaultAbort {
                grpc_status: Some(8),
                percentage: Some(FractionalPercent::percent(100)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap(),
    ))));
    let res = call().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "8");
    assert!(res.extensions().get::<FaultInjected>().is_some());
    assert_eq!(
        called.load(Ordering::SeqCst),
        1,
        "an abort never reaches the handler"
    );

    policy.store(Arc::new(PerRoute::uniform(None)));
    call().await.unwrap();
    assert_eq!(
        called.load(Ordering::SeqCst),
        2,
        "no policy: straight through"
    );
}

//! What Istio's request metrics cost per request: the inbound metrics layer (the same edge
//! lookup, outcome handles and end-of-stream record as a client call) over a handler that
//! answers at once with a 64-byte body, the body read to its end, against the handler alone;
//! with no recorder installed (handles are no-ops) and with the Prometheus exporter.
//!
//! `cargo bench -p mesh-benches --bench telemetry`

#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http_body_util::{BodyExt, Empty, Full};
use mesh_tower::telemetry::{InboundMetricsLayer, Telemetry, Workload};
use std::convert::Infallible;
use std::hint::black_box;
use tower_layer::Layer;
use tower_service::Service;

fn request() -> http::Request<Empty<Bytes>> {
    http::Request::post("http://echo.default.svc.cluster.local:7070/echo.Echo/Say")
        .header("content-type", "application/grpc")
        .body(Empty::new())
        .unwrap()
}

fn handler<B>() -> impl Service<
    http::Request<B>,
    Response = http::Response<Full<Bytes>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    tower::service_fn(|_req: http::Request<B>| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(Full::new(
            Bytes::from_static(&[7; 64]),
        ))))
    })
}

fn run<S, B>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| {
        b.iter(|| {
            let res = svc
                .call(black_box(request()))
                .now_or_never()
                .unwrap()
                .unwrap();
            let body = res.into_body().collect().now_or_never().unwrap().unwrap();
            black_box(body)
        })
    });
}

fn telemetry(c: &mut Criterion) {
    let telemetry = Telemetry::new(Workload {
        name: "echo-v1".into(),
        namespace: "default".into(),
        app: Some("echo".into()),
        version: Some("v1".into()),
        ..Workload::default()
    });
    run(c, "telemetry/handler_alone", handler());
    run(
        c,
        "telemetry/inbound_no_recorder",
        InboundMetricsLayer::new(telemetry.clone()).layer(handler()),
    );
    // The same with the default JSON access log line into a sink, as a server writes it.
    run(
        c,
        "telemetry/inbound_access_log",
        InboundMetricsLayer::new(
            telemetry
                .clone()
                .with_access_log(mesh_tower::telemetry::AccessLog::writer(std::io::sink())),
        )
        .layer(handler()),
    );
    let recorder = mesh_tower::telemetry::prometheus::builder()
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    // A fresh Telemetry: handles are registered with the recorder in place at first use.
    let telemetry = Telemetry::new(telemetry.workload().clone());
    metrics::with_local_recorder(&recorder, || {
        let mut svc = InboundMetricsLayer::new(telemetry.clone()).layer(handler());
        // One request before timing, so the check below holds whichever benches a filter
        // keeps: the recorder receives what the layer records.
        let res = svc.call(request()).now_or_never().unwrap().unwrap();
        drop(res.into_body().collect().now_or_never().unwrap().unwrap());
        assert!(handle.render().contains("istio_requests_total"));
        run(c, "telemetry/inbound_prometheus", svc);
    });
}

criterion_group!(benches, telemetry);
criterion_main!(benches);

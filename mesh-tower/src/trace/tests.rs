use super::propagation::{extract, inject};
use super::*;
use http::HeaderMap;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

#[test]
fn traceparent_is_parsed_as_w3c_says() {
    let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let c = TraceContext::from_traceparent(ok).unwrap();
    assert_eq!(c.span_id.to_string(), "b7ad6b7169203331");
    assert_eq!(c.traceparent(), ok);
    assert!(
        !TraceContext::from_traceparent(&ok.replace("-01", "-00"))
            .unwrap()
            .sampled
    );
    // A later version may carry more fields; version 00 may not; ff is invalid.
    assert!(TraceContext::from_traceparent(&format!("01{}-extra", &ok[2..])).is_some());
    for bad in [
        format!("{ok}-extra"),
        format!("ff{}", &ok[2..]),
        "00-00000000000000000000000000000000-b7ad6b7169203331-01".to_owned(),
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01".to_owned(),
        "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01".to_owned(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01".to_owned(),
        String::new(),
    ] {
        assert!(TraceContext::from_traceparent(&bad).is_none(), "{bad}");
    }
}

#[test]
fn b3_single_and_multi_headers_are_understood() {
    let single = extract(&headers(&[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90",
    )]))
    .unwrap();
    assert_eq!(
        single.trace_id.to_string(),
        "80f198ee56343ba864fe8b2a57d3eff7"
    );
    assert_eq!(single.span_id.to_string(), "e457b5a2e4d86bd1");
    assert!(!single.sampled);
    // Multi, with a 64-bit trace id (the low half of a 128-bit one).
    let multi = extract(&headers(&[
        ("x-b3-traceid", "64fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ]))
    .unwrap();
    assert_eq!(
        multi.trace_id.to_string(),
        "000000000000000064fe8b2a57d3eff7"
    );
    assert!(multi.sampled);
    // W3C wins when both are there; nothing usable is no context.
    let both = extract(&headers(&[
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-b3-traceid", "64fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ]))
    .unwrap();
    assert_eq!(
        both.trace_id.to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(both.tracestate.unwrap(), "congo=t61rcWkgMzE");
    assert!(extract(&headers(&[("x-b3-traceid", "zz")])).is_none());
    assert!(extract(&HeaderMap::new()).is_none());
}

#[test]
fn injected_headers_say_the_next_hop_s_parent() {
    let ctx =
        TraceContext::from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .unwrap();
    let parent = SpanId([1, 2, 3, 4, 5, 6, 7, 8]);
    let mut h = headers(&[("b3", "stale-value"), ("tracestate", "old=1")]);
    inject(Propagation::W3C_AND_B3, &ctx, Some(parent), &mut h);
    assert_eq!(h["traceparent"], ctx.traceparent());
    assert!(
        h.get("tracestate").is_none(),
        "the context's tracestate, none here"
    );
    assert!(h.get("b3").is_none(), "one B3 form only");
    assert_eq!(h["x-b3-spanid"], "b7ad6b7169203331");
    assert_eq!(h["x-b3-parentspanid"], "0102030405060708");
    assert_eq!(h["x-b3-sampled"], "1");
    let back = extract(&h).unwrap();
    assert_eq!((back.trace_id, back.span_id), (ctx.trace_id, ctx.span_id));
    let mut w3c_only = HeaderMap::new();
    inject(Propagation::W3C, &ctx, None, &mut w3c_only);
    assert_eq!(w3c_only.len(), 1);
}

#[test]
fn header_values_cut_from_one_block_stay_each_its_own() {
    // Values share a per-thread block and outlive it (a new block is taken every ~70 ids):
    // each must keep the bytes it was written with, across block boundaries.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sent: Vec<(TraceContext, HeaderMap)> = (0..500)
        .map(|_| {
            let ctx = TraceContext {
                trace_id: TraceId((u128::from(next()) << 64 | u128::from(next())).to_be_bytes()),
                span_id: SpanId(next().to_be_bytes()),
                sampled: next() % 2 == 0,
                tracestate: None,
            };
            let mut h = HeaderMap::new();
            inject(Propagation::W3C_AND_B3, &ctx, None, &mut h);
            (ctx, h)
        })
        .collect();
    for (ctx, h) in &sent {
        assert_eq!(h["traceparent"], ctx.traceparent());
        assert!(h["traceparent"].is_sensitive());
        assert_eq!(h["x-b3-traceid"], ctx.trace_id.to_string());
        assert_eq!(h["x-b3-spanid"], ctx.span_id.to_string());
    }
}

#[test]
fn propagators_are_named_as_opentelemetry_names_them() {
    assert_eq!(
        Propagation::from_otel("tracecontext,baggage").unwrap(),
        Propagation::W3C
    );
    assert_eq!(
        Propagation::from_otel("b3multi, tracecontext").unwrap(),
        Propagation::W3C_AND_B3
    );
    assert!(Propagation::from_otel("xray").unwrap_err().contains("xray"));
}

#[test]
fn ratio_sampling_keeps_its_share_and_agrees_per_trace() {
    fastrand::seed(7);
    let s = Sampler::Ratio(0.25);
    let n = 20_000;
    let kept = (0..n).filter(|_| s.sample(&TraceId::random())).count();
    let share = kept as f64 / n as f64;
    assert!((0.23..0.27).contains(&share), "{share}");
    let t = TraceId::random();
    assert_eq!(
        s.sample(&t),
        s.sample(&t),
        "by trace id: every process agrees"
    );
    assert!(Sampler::AlwaysOn.sample(&t) && !Sampler::AlwaysOff.sample(&t));
    assert!(!Sampler::Ratio(0.0).sample(&t) && Sampler::Ratio(1.0).sample(&t));
}

/// Spans in memory.
#[derive(Default)]
struct Spans(std::sync::Mutex<Vec<SpanRecord>>);

impl SpanSink for Spans {
    fn record(&self, span: SpanRecord) {
        self.0.lock().unwrap().push(span);
    }
}

/// A traced call with a retry, to a traced server of the same mesh that fails its first
/// request: one trace of five spans, each attempt a child of the call and the parent of the
/// server span it reached.
#[tokio::test]
async fn a_retried_call_and_the_requests_it_reached_make_one_trace() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower::ServiceExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let yaml = crate::test_util::web_h2_yaml(
        addr,
        "retry_policy: { retry_on: 5xx, num_retries: 1, retry_back_off: { base_interval: 0.001s } }",
    );
    let spans = Arc::new(Spans::default());
    let tracer = Tracer::new(Sampler::AlwaysOn, spans.clone());
    let telemetry = crate::telemetry::Telemetry::new(Default::default()).with_tracer(tracer);
    let mesh = crate::test_util::mesh_of(&yaml, telemetry).await;
    let served = Arc::new(AtomicU32::new(0));
    let (count, seen) = (served.clone(), Arc::new(std::sync::Mutex::new(Vec::new())));
    let seen_in = seen.clone();
    let handler = tower::service_fn(move |req: http::Request<crate::server::Incoming>| {
        // The handler finds its span's context, to pass on.
        seen_in
            .lock()
            .unwrap()
            .push(req.extensions().get::<TraceContext>().cloned());
        let first = count.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let mut res = http::Response::new(http_body_util::Full::new(Bytes::from_static(b"ok")));
            if first {
                *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    tokio::spawn(mesh.server("s").unwrap().serve(listener, handler));

    let client = mesh.http_client::<Empty<Bytes>>();
    let res = client
        .oneshot(
            http::Request::get("http://web/items")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ctx = res
        .extensions()
        .get::<TraceContext>()
        .cloned()
        .expect("the call's context");
    res.into_body().collect().await.unwrap();
    let done = async {
        while spans.0.lock().unwrap().len() < 5 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), done)
        .await
        .expect("five spans");
    let all = spans.0.lock().unwrap().clone();
    assert!(all.iter().all(|s| s.trace_id == ctx.trace_id), "one trace");
    let of = |kind: SpanKind, name: &str| -> Vec<&SpanRecord> {
        all.iter()
            .filter(|s| s.kind == kind && s.name == name)
            .collect()
    };
    let call = of(SpanKind::Client, "GET web");
    assert_eq!(call.len(), 3, "the call and its two attempts: {all:#?}");
    let root: Vec<_> = call.iter().filter(|s| s.parent_span_id.is_none()).collect();
    assert_eq!(root.len(), 1);
    assert_eq!(root[0].span_id, ctx.span_id);
    assert!(root[0].error.is_none(), "the call succeeded");
    let attempts: Vec<_> = call
        .iter()
        .filter(|s| s.parent_span_id == Some(ctx.span_id))
        .collect();
    assert_eq!(attempts.len(), 2);
    let previous = |s: &SpanRecord| {
        s.attributes
            .iter()
            .find(|(k, _)| *k == "previous-rpc-attempts")
            .map(|(_, v)| v.clone())
    };
    let mut counts: Vec<_> = attempts.iter().map(|s| previous(s)).collect();
    counts.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(counts, [Some(AttrValue::Int(0)), Some(AttrValue::Int(1))]);
    let server = of(SpanKind::Server, "GET /items");
    assert_eq!(server.len(), 2, "each attempt reached the server");
    for s in &server {
        let parent = attempts
            .iter()
            .find(|a| Some(a.span_id) == s.parent_span_id)
            .expect("a server span's parent is the attempt that reached it");
        assert_eq!(parent.error.is_some(), s.error.is_some(), "503 then 200");
    }
    let handler_saw: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.clone().unwrap().span_id)
        .collect();
    let server_ids: Vec<_> = server.iter().map(|s| s.span_id).collect();
    for id in handler_saw {
        assert!(
            server_ids.contains(&id),
            "the handler's context is its server span"
        );
    }
}

#[test]
fn grpc_spans_take_a72_names_and_continue_the_applications_context() {
    let spans = Arc::new(Spans::default());
    let tracer = Tracer::new(Sampler::AlwaysOff, spans.clone());
    let grpc = || {
        http::Request::post("http://greeter/helloworld.Greeter/SayHello")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    };
    // A new trace under AlwaysOff: propagated (once, for every attempt), not recorded.
    let mut req = grpc();
    let (span, ctx) = tracer.client_call(&mut req);
    assert!(span.is_none() && !ctx.sampled);
    assert!(
        req.extensions().get::<CallTrace>().is_none(),
        "no attempt spans to make"
    );
    assert_eq!(
        req.headers()["traceparent"].to_str().unwrap(),
        ctx.traceparent()
    );
    assert!(ctx.traceparent().ends_with("-00"));
    let endpoint = "10.0.0.1:50051".parse().unwrap();
    // The application's context (from the request it serves) is continued, sampled as it is.
    let parent =
        TraceContext::from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .unwrap();
    let mut req = grpc();
    req.extensions_mut().insert(parent.clone());
    let span = tracer
        .client_call(&mut req)
        .0
        .expect("sampled by its parent");
    span.end(200, Some(0), None);
    let call = req.extensions().get::<CallTrace>().unwrap().clone();
    call.attempt(&mut req, "greeter", endpoint)
        .expect("sampled")
        .end(200, Some(14), None);
    let mut server_req = grpc();
    *server_req.headers_mut() = req.headers().clone();
    tracer
        .server(&mut server_req)
        .expect("the caller sampled it")
        .end(200, Some(0), None);
    let got = spans.0.lock().unwrap().clone();
    let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Sent.helloworld.Greeter.SayHello",
            "Attempt.helloworld.Greeter.SayHello",
            "Recv.helloworld.Greeter.SayHello"
        ]
    );
    assert_eq!(got[0].parent_span_id, Some(parent.span_id));
    assert_eq!(got[1].parent_span_id, Some(got[0].span_id));
    assert_eq!(got[2].parent_span_id, Some(got[1].span_id));
    assert!(got.iter().all(|s| s.trace_id == parent.trace_id));
    assert_eq!(got[1].error.as_deref(), Some("gRPC status 14"));
    assert!(got[0].error.is_none() && got[2].error.is_none());
}

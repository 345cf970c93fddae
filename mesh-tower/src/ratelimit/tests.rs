//! The token bucket and the refusal, with paused time.

use super::*;
use crate::route::RoutePolicy;
use crate::test_util::{BoxFut, request, response, service};
use mesh_core::policy::TokenBucket;
use mesh_core::policy::{FractionalPercent, LocalRateLimit};
use std::sync::Arc;
use std::time::Duration;

fn config(max: u32, per_fill: u32, every_ms: u64) -> LocalRateLimit {
    LocalRateLimit {
        token_bucket: Some(TokenBucket {
            max_tokens: max,
            tokens_per_fill: Some(per_fill),
            fill_interval: Duration::from_millis(every_ms),
        }),
        filter_enabled: Some(FractionalPercent::percent(100)),
        filter_enforced: Some(FractionalPercent::percent(100)),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn the_bucket_refills_per_interval_up_to_its_size() {
    let l = RateLimiter::new(&config(3, 2, 1000)).unwrap().unwrap();
    let now = Instant::now();
    assert!((0..3).all(|_| l.try_acquire(now)));
    assert!(!l.try_acquire(now));
    let later = now + Duration::from_millis(999);
    assert!(!l.try_acquire(later), "no refill before the interval");
    let later = now + Duration::from_millis(1000);
    assert!(l.try_acquire(later) && l.try_acquire(later));
    assert!(!l.try_acquire(later), "2 tokens per fill");
    let much_later = now + Duration::from_secs(100);
    assert_eq!(
        (0..10).filter(|_| l.try_acquire(much_later)).count(),
        3,
        "capped at max_tokens"
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_carry_the_status_headers_and_grpc_code() {
    let mut c = config(1, 1, 60_000);
    c.status = Some(503);
    c.response_headers_to_add = vec![mesh_core::config::headers::HeaderValueOption {
        header: mesh_core::config::headers::HeaderValue {
            key: "x-limited".into(),
            value: "1".into(),
        },
        ..Default::default()
    }];
    let mut info = RoutePolicy::to_cluster("r", "c", None);
    info.rate_limit = Some(Arc::new(RateLimiter::new(&c).unwrap().unwrap()));
    let info = Arc::new(info);
    let mut svc = RateLimit::new(
        service(|_: Request<()>| -> BoxFut { Box::pin(async { Ok(response(200, 1)) }) }),
        Some(1),
    );
    assert_eq!(
        svc.call(request(&info, "/", ())).await.unwrap().status(),
        200
    );
    let refused = svc.call(request(&info, "/", ())).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-limited"], "1");
    assert!(refused.extensions().get::<RateLimited>().is_some());

    let mut grpc_req = request(&info, "/", ());
    grpc_req.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    let refused = svc.call(grpc_req).await.unwrap();
    assert_eq!(refused.headers()["grpc-status"], "14");

    let mut c2 = config(1, 1, 60_000);
    c2.rate_limited_as_resource_exhausted = true;
    let mut info2 = RoutePolicy::to_cluster("r", "c", None);
    info2.rate_limit = Some(Arc::new(RateLimiter::new(&c2).unwrap().unwrap()));
    let info2 = Arc::new(info2);
    let _ = svc.call(request(&info2, "/", ())).await.unwrap();
    let mut grpc_req = request(&info2, "/", ());
    grpc_req.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    assert_eq!(
        svc.call(grpc_req).await.unwrap().headers()["grpc-status"],
        "8"
    );
}

#[tokio::test(start_paused = true)]
async fn the_filter_is_off_unless_enabled_and_enforced() {
    for (enabled, enforced, limited) in [(0, 100, false), (100, 0, false), (100, 100, true)] {
        let mut c = config(1, 1, 60_000);
        c.filter_enabled = Some(FractionalPercent::percent(enabled));
        c.filter_enforced = Some(FractionalPercent::percent(enforced));
        let l = RateLimiter::new(&c).unwrap().unwrap();
        let now = Instant::now();
        let refused = (0..5).filter(|i| l.refuses(now, *i, *i)).count();
        assert_eq!(
            refused > 0,
            limited,
            "enabled {enabled} enforced {enforced}"
        );
    }
}

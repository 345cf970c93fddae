//! Mirrors: the copy goes to the shadow cluster with a `-shadow` authority and the same body,
//! the primary is unaffected, and fractions hold.

use super::*;
use crate::route::RoutePolicy;
use crate::test_util::{BoxFut, request, response, service};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

#[tokio::test]
async fn the_copy_reaches_the_shadow_cluster_with_the_body() {
    let mut info = RoutePolicy::to_cluster("r", "c", None);
    info.mirrors = vec![MirrorPolicy {
        cluster: "shadow".into(),
        fraction: None,
    }];
    let info = Arc::new(info);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let svc = service(move |req: Request<ReplayBody<Full<Bytes>>>| -> BoxFut {
        let tx = tx.clone();
        Box::pin(async move {
            let cluster = req
                .extensions()
                .get::<RouteDecision>()
                .unwrap()
                .cluster
                .to_string();
            let authority = req.uri().authority().unwrap().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let shadow = cluster == "shadow";
            tx.send((cluster, authority, body)).unwrap();
            if shadow {
                // A failing shadow must not matter.
                Err(MeshError::new(crate::ErrorKind::Upstream, "shadow down"))
            } else {
                Ok(response(200, 1))
            }
        })
    });
    let mut mirror = Mirror::new(svc, Some(1), Arc::default());
    let req = request(&info, "/x", Full::new(Bytes::from_static(b"payload")))
        .map(|b| ReplayBody::replayable(b, 1024));
    let res = mirror.call(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut got = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    got.sort();
    assert_eq!(
        got,
        [
            ("c".into(), "svc".into(), Bytes::from_static(b"payload")),
            (
                "shadow".into(),
                "svc-shadow".into(),
                Bytes::from_static(b"payload")
            ),
        ]
    );
    assert_eq!(mirror.sent(), 1);
}

#[tokio::test]
async fn fractions_retries_and_unreplayable_bodies() {
    let mut info = RoutePolicy::to_cluster("r", "c", None);
    info.mirrors = vec![MirrorPolicy {
        cluster: "shadow".into(),
        fraction: Some(mesh_core::policy::FractionalPercent::percent(25)),
    }];
    let info = Arc::new(info);
    let svc = service(|_: Request<ReplayBody<Full<Bytes>>>| -> BoxFut {
        Box::pin(async { Ok(response(200, 1)) })
    });
    let mut mirror = Mirror::new(svc, Some(7), Arc::default());
    for _ in 0..4000 {
        let req =
            request(&info, "/", Full::new(Bytes::new())).map(|b| ReplayBody::replayable(b, 16));
        mirror.call(req).await.unwrap();
    }
    // Binomial(4000, 0.25): sd ≈ 27.4; ±4 sd.
    let sent = mirror.sent();
    assert!((890..=1110).contains(&sent), "{sent}");

    let mut every = RoutePolicy::to_cluster("r", "c", None);
    every.mirrors = vec![MirrorPolicy {
        cluster: "shadow".into(),
        fraction: None,
    }];
    let every = Arc::new(every);
    let before = mirror.sent();
    let mut retry =
        request(&every, "/", Full::new(Bytes::new())).map(|b| ReplayBody::replayable(b, 16));
    retry
        .headers_mut()
        .insert("x-envoy-attempt-count", http::HeaderValue::from_static("2"));
    mirror.call(retry).await.unwrap();
    assert_eq!(mirror.sent(), before, "only the first attempt is mirrored");

    let direct = request(&every, "/", Full::new(Bytes::new())).map(ReplayBody::direct);
    mirror.call(direct).await.unwrap();
    assert_eq!((mirror.sent(), mirror.skipped()), (before, 1));
}

//! Config changes under traffic: hot reload of the file, rejected files, endpoints leaving,
//! in-flight requests across a change.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::{ErrorKind, Mesh, MeshService, Reload};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;

/// One response (or error) seen by the traffic loop, and whether the request started after
/// the change under test was applied.
#[derive(Debug)]
struct Outcome {
    started_after_change: bool,
    result: Result<SocketAddr, (ErrorKind, String)>,
}

/// Sends requests from `workers` tasks until `stop` is set, reporting every outcome.
fn traffic(
    svc: MeshService<Empty<Bytes>>,
    workers: usize,
    changed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> mpsc::UnboundedReceiver<Outcome> {
    let (tx, rx) = mpsc::unbounded_channel();
    for _ in 0..workers {
        let (svc, changed, stop, tx) = (svc.clone(), changed.clone(), stop.clone(), tx.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started_after_change = changed.load(Ordering::SeqCst);
                let result = match get(&svc, "http://web/").await {
                    Ok((_, served, _)) => Ok(served.endpoint),
                    Err(e) => Err((e.kind(), e.to_string())),
                };
                if tx
                    .send(Outcome {
                        started_after_change,
                        result,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    rx
}

/// Reads the next `n` outcomes.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Outcome>, n: usize) -> Vec<Outcome> {
    let mut all = Vec::with_capacity(n);
    tokio::time::timeout(PATIENCE, async {
        while all.len() < n {
            all.push(rx.recv().await.expect("traffic running"));
        }
    })
    .await
    .expect("traffic kept flowing");
    all
}

/// Reads outcomes until `n` requests that started after the change have completed.
async fn collect_after_change(rx: &mut mpsc::UnboundedReceiver<Outcome>, n: usize) -> Vec<Outcome> {
    let mut all = Vec::new();
    let mut after = 0;
    tokio::time::timeout(PATIENCE, async {
        while after < n {
            let o = rx.recv().await.expect("traffic running");
            after += usize::from(o.started_after_change);
            all.push(o);
        }
    })
    .await
    .expect("traffic kept flowing");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_switches_traffic_without_failed_requests() {
    let (a, b) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let file = config_file(&web_config(&[a.addr()], "HTTP2"));
    let mesh = Mesh::from_file(file.path()).await.unwrap();
    let (changed, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut rx = traffic(mesh.http_client(), 4, changed.clone(), stop.clone());

    // Let traffic flow on the old config first.
    let warmup = collect(&mut rx, 50).await;
    assert!(
        warmup.iter().all(|o| o.result == Ok(a.addr())),
        "{warmup:?}"
    );

    rewrite(&file, &web_config(&[b.addr()], "HTTP2"));
    assert_eq!(mesh.reload().await.unwrap(), Reload::Applied);
    changed.store(true, Ordering::SeqCst);

    let outcomes = collect_after_change(&mut rx, 200).await;
    stop.store(true, Ordering::Relaxed);
    let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "no request may fail across a reload: {failed:?}"
    );
    for o in outcomes.iter().filter(|o| o.started_after_change) {
        assert_eq!(
            o.result,
            Ok(b.addr()),
            "requests after the reload use the new config"
        );
    }
    let status = mesh.source_status().borrow().clone();
    assert_eq!((status.applied, status.rejected), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_picks_up_file_changes_by_itself() {
    let (a, b) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let file = config_file(&web_config(&[a.addr()], "HTTP1"));
    let mesh = Mesh::builder()
        .file(file.path())
        .file_poll_interval(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let http = mesh.http_client();
    assert_eq!(
        get(&http, "http://web/").await.unwrap().1.endpoint,
        a.addr()
    );

    let mut status = mesh.source_status();
    status.borrow_and_update();
    rewrite(&file, &web_config(&[b.addr()], "HTTP1"));
    tokio::time::timeout(PATIENCE, status.wait_for(|s| s.applied == 2))
        .await
        .expect("poller applied the new file")
        .unwrap();
    assert_eq!(
        get(&http, "http://web/").await.unwrap().1.endpoint,
        b.addr()
    );
}

#[tokio::test]
async fn a_bad_file_is_rejected_whole_and_the_old_config_keeps_serving() {
    let a = Backend::start().await.unwrap();
    let file = config_file(&web_config(&[a.addr()], "HTTP2"));
    let mesh = Mesh::from_file(file.path()).await.unwrap();
    let http = mesh.http_client();

    // A validation error: names the field.
    let bad = web_config(&[a.addr()], "HTTP2").replace("prefix: /", "safe_regex: { regex: \"(\" }");
    rewrite(&file, &bad);
    let err = mesh.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("listeners[0].route_config.virtual_hosts[0].routes[0].match.safe_regex.regex: invalid regex"),
        "{err}"
    );
    let status = mesh.source_status().borrow().clone();
    assert_eq!((status.applied, status.rejected), (1, 1));
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("safe_regex.regex"),
        "{status:?}"
    );
    assert_eq!(
        get(&http, "http://web/").await.unwrap().1.endpoint,
        a.addr(),
        "old config in force"
    );

    // A parse error (and a change of cluster that must not half-apply).
    rewrite(
        &file,
        "clusters: [ { name: web, type: EDS, protocol: HTTP3 } ]",
    );
    assert!(matches!(
        mesh.reload().await,
        Err(mesh_tower::FileError::Invalid { .. })
    ));
    assert_eq!(
        get(&http, "http://web/").await.unwrap().1.endpoint,
        a.addr()
    );
    assert_eq!(
        mesh.config_dump(),
        mesh_core::MeshConfig::from_yaml(&web_config(&[a.addr()], "HTTP2")).unwrap()
    );

    // A missing file.
    std::fs::remove_file(file.path()).unwrap();
    assert!(matches!(
        mesh.reload().await,
        Err(mesh_tower::FileError::Read { .. })
    ));
    assert_eq!(
        get(&http, "http://web/").await.unwrap().1.endpoint,
        a.addr()
    );

    // A good file again clears the error.
    std::fs::write(file.path(), web_config(&[a.addr()], "HTTP1")).unwrap();
    assert_eq!(mesh.reload().await.unwrap(), Reload::Applied);
    assert_eq!(mesh.source_status().borrow().last_error, None);
}

#[tokio::test]
async fn an_invalid_file_at_startup_is_an_error() {
    let file = config_file("listeners: [{ name: x }]");
    let err = Mesh::from_file(file.path()).await.unwrap_err().to_string();
    assert!(
        err.contains("listeners[0]: exactly one of rds and route_config must be set"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_going_away_mid_traffic() {
    let (a, b) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let (mesh, store, counter) = counting_mesh(&web_config(&[a_addr, b_addr], "HTTP2")).await;
    let (changed, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut rx = traffic(mesh.http_client(), 4, changed.clone(), stop.clone());
    let warm = collect(&mut rx, 50).await;
    assert!(warm.iter().all(|o| o.result.is_ok()), "{warm:?}");
    assert!(
        warm.iter().any(|o| o.result == Ok(b_addr)),
        "both endpoints in use"
    );

    // The endpoint dies; until discovery removes it, requests picked for it fail and say so.
    b.stop().await;
    let mut saw_b_failure = false;
    tokio::time::timeout(PATIENCE, async {
        while !saw_b_failure {
            let o = rx.recv().await.unwrap();
            if let Err((kind, msg)) = &o.result {
                assert!(
                    matches!(kind, ErrorKind::Connect | ErrorKind::Upstream),
                    "{kind:?}: {msg}"
                );
                assert!(
                    msg.contains(&b_addr.to_string()) && msg.contains("cluster \"web\""),
                    "{msg}"
                );
                saw_b_failure = true;
            } else {
                assert!(o.result == Ok(a_addr) || o.result == Ok(b_addr));
            }
        }
    })
    .await
    .expect("requests to the dead endpoint fail visibly");

    // Discovery removes it: from the next request on, nothing fails and A's connection stays.
    push(&store, &web_config(&[a_addr], "HTTP2"));
    changed.store(true, Ordering::SeqCst);
    let outcomes = collect_after_change(&mut rx, 200).await;
    stop.store(true, Ordering::Relaxed);
    for o in outcomes.iter().filter(|o| o.started_after_change) {
        assert_eq!(o.result, Ok(a_addr), "{o:?}");
    }
    assert_eq!(
        counter.count(a_addr),
        1,
        "the endpoint that stayed kept its one connection"
    );
}

#[tokio::test]
async fn in_flight_requests_finish_across_a_config_change() {
    let (a, b) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let (mesh, store, counter) = counting_mesh(&web_config(&[a.addr()], "HTTP2")).await;
    let http = mesh.http_client();

    let slow = {
        let http = http.clone();
        tokio::spawn(async move { get(&http, "http://web/delay/300").await })
    };
    // Wait until the slow request has its connection (an event, not a sleep).
    tokio::time::timeout(PATIENCE, async {
        while counter.count(a.addr()) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    push(&store, &web_config(&[b.addr()], "HTTP2"));
    assert_eq!(
        get(&http, "http://web/").await.unwrap().1.endpoint,
        b.addr(),
        "next request: new config"
    );
    let (status, served, _) = slow.await.unwrap().unwrap();
    assert_eq!(
        (status, served.endpoint),
        (200, a.addr()),
        "the in-flight request finished on the old endpoint"
    );
}

#[tokio::test]
async fn an_unrelated_change_keeps_connections() {
    let a = Backend::start().await.unwrap();
    let base = web_config(&[a.addr()], "HTTP2");
    let (mesh, store, counter) = counting_mesh(&base).await;
    let http = mesh.http_client();
    get(&http, "http://web/").await.unwrap();
    // Another cluster appears and the route gains a virtual host: web's state is untouched.
    let more = base.replace("clusters:\n", "clusters:\n  - { name: other }\n").replace(
        "      virtual_hosts:\n",
        "      virtual_hosts:\n        - { name: o, domains: [other], routes: [{ match: { prefix: / }, route: { cluster: other } }] }\n",
    );
    let v = store
        .replace(mesh_core::MeshConfig::from_yaml(&more).unwrap())
        .unwrap();
    assert_eq!(v, 2);
    for _ in 0..5 {
        get(&http, "http://web/").await.unwrap();
    }
    assert_eq!(counter.count(a.addr()), 1);
}

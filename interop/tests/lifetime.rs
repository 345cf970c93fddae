//! A mesh's background work (config source, refresher) lives as long as the mesh handle or any
//! service made from it, as a tonic `Channel`'s does, and stops with the last of them.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_interop::ads::FakeAds;
use mesh_tower::Mesh;
use std::time::Duration;
use support::fake::{snapshot, until_served_at, until_served_by, xds_mesh};
use support::{PATIENCE, config_file, rewrite, web_config};

#[tokio::test]
async fn a_channel_outliving_its_xds_mesh_keeps_getting_updates_and_its_end_stops_the_client() {
    let (one, two) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let ads = FakeAds::start().await;
    ads.set(snapshot(&[one.addr()]));
    // The user's one-liner: only the channel is kept.
    let web = {
        let mesh = xds_mesh(&ads, false, Duration::from_secs(15)).await;
        let web = mesh.channel::<Empty<Bytes>>("xds:///web");
        mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
        web
    };
    until_served_by(&web, one.addr()).await;
    // The control plane moves the service: the channel follows.
    ads.set(snapshot(&[two.addr()]));
    until_served_by(&web, two.addr()).await;
    assert_eq!(
        ads.closed(),
        0,
        "the stream stays open while the channel lives"
    );
    // The last service goes: the xDS client stops and its stream ends.
    let clone = web.clone();
    drop(web);
    until_served_by(&clone, two.addr()).await;
    assert_eq!(ads.closed(), 0, "a clone keeps it alive");
    drop(clone);
    ads.wait_closed(1).await;
}

#[tokio::test]
async fn a_client_outliving_its_file_mesh_keeps_reloading() {
    let (one, two) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let file = config_file(&web_config(&[one.addr()], "HTTP1"));
    let http = {
        let mesh = Mesh::builder()
            .file(file.path())
            .file_poll_interval(Duration::from_millis(20))
            .build()
            .await
            .unwrap();
        mesh.http_client::<Empty<Bytes>>()
    };
    until_served_at(&http, "http://web/", one.addr()).await;
    rewrite(&file, &web_config(&[two.addr()], "HTTP1"));
    until_served_at(&http, "http://web/", two.addr()).await;
}

//! The `istio` example end to end against a real istiod serving the example's own YAML
//! (`examples/istio/config`): what the example prints is what a user sees.

mod support;

use mesh_examples::istio::{ECHO_ADDR, FRONTEND_ID, run};
use support::istiod::Istiod;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_istio_example_runs_against_istiod() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/istio/config");
    // Istiod::start writes its log beside the config directory: give it a copy of its own.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("config");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(&config).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let istiod = Istiod::start(&copy);
    let report = run(&istiod.grpc.to_string(), &dir.path().join("work"))
        .await
        .unwrap();
    assert_eq!(
        report.greeting,
        format!("{ECHO_ADDR} /helloworld.Greeter/SayHello {FRONTEND_ID}\n")
    );
    assert_eq!(
        report.hello,
        (200, format!("{ECHO_ADDR} /hello {FRONTEND_ID}\n"))
    );
    assert_eq!(report.admin_status, 403);
}

//! Error texts quoted in the guides are the real ones.

use mesh_core::MeshConfig;
use mesh_tower::breaker::Limits;

fn guide(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/guides")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn the_overflow_error_in_traffic_policy_md_is_the_real_one() {
    let limits = Limits::new("limited".into());
    let config = MeshConfig::from_yaml(
        "clusters: [{ name: limited, circuit_breakers: { thresholds: [{ max_requests: 1 }] } }]",
    )
    .unwrap();
    limits.configure(config.clusters[0].circuit_breakers.as_ref());
    let _held = limits.try_request().unwrap();
    let err = limits.try_request().unwrap_err().to_string();
    let quoted = format!("```text\n{err}\n```");
    assert!(
        guide("traffic-policy.md").contains(&quoted),
        "traffic-policy.md should quote the real text:\n{err}"
    );
}

//! A coverage-guided fuzz target for xDS resources, run by AFL++ through `cargo afl`.
//!
//! Why beside the seeded fuzzer (`mesh-xds-client/tests/fuzz.rs`): that one runs in the test
//! command with no tooling, but it mutates blindly; AFL++ keeps the inputs that reach new
//! branches of the decoder and the translation, so it gets where a blind mutator rarely does.
//! The properties are the same: no panic, a rejection names a field path, an accepted resource
//! translates the same twice. An input is one byte choosing the resource type, then the
//! resource's protobuf bytes.
//!
//! ```text
//! CARGO_TARGET_DIR=target/afl cargo afl build --release -p mesh-interop --features afl --bin afl-xds
//! target/afl/release/afl-xds --seeds target/afl/seeds
//! AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 cargo afl fuzz -V 3600 \
//!     -i target/afl/seeds -o target/afl/out target/afl/release/afl-xds
//! ```
//!
//! A crash lands in `target/afl/out/default/crashes/`; a plain build replays it
//! (`cargo run -p mesh-interop --features afl --bin afl-xds -- FILE…`).

use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::build;
use mesh_xds_client::translate::{Context, ResourceType, decode_in};
use std::path::Path;

/// What the seeded fuzzer translates with (a certificate provider and an inbound route
/// config to name).
fn context() -> Context {
    Context {
        certificate_providers: ["default".to_owned()].into(),
        inbound_route_configs: ["inbound-routes".to_owned()].into(),
        ..Default::default()
    }
}

/// Checks one input; a broken property panics, which AFL++ records as a crash.
fn check(ctx: &Context, data: &[u8]) {
    let Some((&tag, value)) = data.split_first() else {
        return;
    };
    let ty = ResourceType::ALL[usize::from(tag) % ResourceType::ALL.len()];
    let any = Any {
        type_url: ty.type_url().into(),
        value: value.to_vec(),
    };
    let Ok(first) = decode_in(ty, &any, ctx) else {
        return; // not this type's message: NACKed as undecodable
    };
    match &first.result {
        Err(e) => assert!(
            !e.trim().is_empty() && e.contains(": "),
            "a rejection without a field path: {e:?}"
        ),
        Ok(t) => {
            let again = decode_in(ty, &any, ctx).expect("decoded once");
            assert!(
                again.result.as_ref() == Ok(t),
                "not deterministic: {t:?} then {:?}",
                again.result
            );
        }
    }
}

/// Writes the starting inputs: the resources a real istiod sent (checked in for the seeded
/// fuzzer) and one of each type made by `build`.
fn write_seeds(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tag = |ty: ResourceType| ResourceType::ALL.iter().position(|t| *t == ty).unwrap() as u8;
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-xds-client/tests/corpus/istiod");
    let mut n = 0;
    for entry in std::fs::read_dir(corpus)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(ty) = ResourceType::ALL
            .into_iter()
            .find(|t| name.starts_with(&format!("{}-", t.short().to_lowercase())))
        else {
            continue;
        };
        let mut input = vec![tag(ty)];
        input.extend(std::fs::read(entry.path())?);
        std::fs::write(dir.join(format!("istiod-{n}")), input)?;
        n += 1;
    }
    let made = [
        (
            ResourceType::Listener,
            build::any(&build::api_listener_rds("web", "web-routes")),
        ),
        (
            ResourceType::RouteConfiguration,
            build::any(&build::route_config(
                "web-routes",
                &["*"],
                vec![build::route("/", "web")],
            )),
        ),
        (
            ResourceType::Cluster,
            build::any(&build::eds_cluster("web")),
        ),
        (
            ResourceType::ClusterLoadAssignment,
            build::any(&build::assignment(
                "web",
                &["127.0.0.1:8080".parse().unwrap()],
            )),
        ),
    ];
    for (i, (ty, any)) in made.into_iter().enumerate() {
        let mut input = vec![tag(ty)];
        input.extend(any.value);
        std::fs::write(dir.join(format!("built-{i}")), input)?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = args.as_slice()
        && flag == "--seeds"
    {
        write_seeds(Path::new(dir)).expect("write seeds");
        return;
    }
    let ctx = context();
    // Under `cargo afl build` (which sets `cfg(fuzzing)`): AFL++'s persistent loop. A plain
    // build cannot link AFL++'s runtime; it replays the inputs named on the command line (a
    // crash file, or the seeds in the test command).
    #[cfg(fuzzing)]
    afl::fuzz!(|data: &[u8]| check(&ctx, data));
    #[cfg(not(fuzzing))]
    for file in &args {
        check(&ctx, &std::fs::read(file).expect("an input file"));
    }
}

use super::target::{ByAuthority, TargetState, listener_name};
use super::{Route, Targets};
use mesh_core::Store;
use std::sync::Arc;
use tower_layer::Layer;

/// Applies [`Route`] for one target or for each request's authority.
#[derive(Clone, Debug)]
pub struct RouteLayer {
    targets: Targets,
}

impl RouteLayer {
    /// Routes every request by the listener of `target` (`xds:///name` or `name`).
    pub fn for_target(store: Store, target: &str) -> Self {
        let targets = match listener_name(target) {
            Ok(name) => Targets::One(Arc::new(TargetState::new(
                store,
                name,
                vec![name.to_owned()],
            ))),
            Err(_) => Targets::Invalid(target.into(), super::target::INVALID_TARGET.into()),
        };
        Self { targets }
    }

    /// Routes each request by the listener named by its authority (`host:port`, then `host`).
    pub fn by_authority(store: Store) -> Self {
        Self {
            targets: Targets::ByAuthority(Arc::new(ByAuthority::new(store))),
        }
    }

    pub(crate) fn shared_by_authority(map: Arc<ByAuthority>) -> Self {
        Self {
            targets: Targets::ByAuthority(map),
        }
    }

    pub(crate) fn into_targets(self) -> Targets {
        self.targets
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route::new(inner, self.targets.clone())
    }
}

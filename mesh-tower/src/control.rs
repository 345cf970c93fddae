//! Where the mesh's control work runs: by default, a thread of its own.
//!
//! Why: the control work (the xDS client's streams, the config file's poller, the task that
//! brings cluster state up to date after a config change, DNS refresh) must keep running
//! whatever the application's tasks do. On the application's runtime it can be starved: a task
//! that never yields is never preempted by tokio, and a task it wakes can sit behind it on the
//! same worker (in the multi-thread scheduler's LIFO slot, which other workers do not steal
//! from; on a current-thread runtime, behind it, full stop). A caller looping over calls that
//! fail at once (no endpoint while a config change is out) is exactly such a task, and once
//! the config cannot change, the loop never ends. Proxies keep their control plane apart from
//! the data plane for the same reason (Envoy's main thread, linkerd's admin runtime).
//!
//! So control work goes to [`Control::dedicated`]: one process-wide thread running a
//! current-thread tokio runtime, started on first use and parked when there is nothing to do.
//! The request path never touches it: it reads the config lock-free from the store, which the
//! control thread writes. [`Control::runtime`] puts the work on a runtime of the
//! application's choosing instead (for example a test with paused time).
//!
//! Requests also take part in tokio's cooperative scheduling where they complete at once (see
//! [`MeshService`](crate::MeshService)), so a caller's loop over fast failures yields like a
//! loop over tokio I/O does.

use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// The runtime that runs a mesh's control work (see the [module docs](self)).
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use mesh_tower::{Mesh, control::Control};
/// // The default: the process-wide control thread.
/// let mesh = Mesh::builder().control(Control::dedicated()).build().await?;
/// // Or the caller's own runtime.
/// let same = Mesh::builder()
///     .control(Control::runtime(tokio::runtime::Handle::current()))
///     .build()
///     .await?;
/// # let _ = (mesh, same); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Control {
    handle: Handle,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("runtime", &self.handle.id())
            .finish()
    }
}

impl Default for Control {
    fn default() -> Self {
        Self::dedicated()
    }
}

impl Control {
    /// The process-wide control thread (`mesh-control`), started on first use.
    pub fn dedicated() -> Self {
        static CONTROL: OnceLock<Handle> = OnceLock::new();
        let handle = CONTROL.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the mesh's control runtime starts");
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("mesh-control".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .expect("the mesh's control thread starts");
            handle
        });
        Self {
            handle: handle.clone(),
        }
    }

    /// Control work runs on `handle`'s runtime.
    pub fn runtime(handle: Handle) -> Self {
        Self { handle }
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns `work` on the control runtime; the handle stops it.
    pub fn spawn<F>(&self, work: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(work).abort_handle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn dedicated_work_runs_while_the_callers_thread_is_blocked() {
        // The caller's (only) thread blocks on the result: control work must not need it.
        let (tx, rx) = std::sync::mpsc::channel();
        Control::dedicated().spawn(async move {
            tokio::task::yield_now().await;
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
        });
        let name = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("control work ran");
        assert_eq!(name.as_deref(), Some("mesh-control"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_chosen_runtime_runs_the_work() {
        let control = Control::runtime(Handle::current());
        let (tx, rx) = tokio::sync::oneshot::channel();
        control.spawn(async move {
            tx.send(Handle::current().id()).unwrap();
        });
        assert_eq!(rx.await.unwrap(), Handle::current().id());
    }
}

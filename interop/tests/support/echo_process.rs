//! The `serve` example as a real endpoint process that a test can SIGKILL, SIGSTOP and SIGCONT:
//! what an endpoint crashing or freezing looks like to the mesh (the kernel closes its sockets,
//! or keeps accepting for a process that answers nothing), which no in-process server can show.

use super::example_binary;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `serve --listen ADDR --config FILE`; killed on drop.
pub struct EchoProcess {
    child: Child,
    /// Where it serves.
    pub addr: SocketAddr,
}

impl EchoProcess {
    /// Starts it on a free port from `config` (a mesh YAML; without a `servers:` entry it
    /// serves plaintext) and returns once it says it serves.
    pub fn start(config: &Path) -> Self {
        Self::spawn(mesh_interop::envoy::free_port(), |cmd| {
            cmd.arg("--config").arg(config);
        })
    }

    /// Starts `serve --listen listen` with the arguments and environment `configure` adds
    /// (`--config` or `--bootstrap`, `--admin`, …) and returns once it says it serves.
    pub fn spawn(listen: SocketAddr, configure: impl FnOnce(&mut Command)) -> Self {
        let mut cmd = Command::new(example_binary("serve"));
        cmd.args(["--listen", &listen.to_string()]);
        configure(&mut cmd);
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("serve: ") && line.contains(" on ") => break,
                Some(Ok(line)) => seen.push(line),
                _ => panic!("serve exited before serving: {seen:?}"),
            }
        }
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Self {
            child,
            addr: listen,
        }
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// SIGKILLs it and reaps it: its sockets are closed when this returns.
    pub fn kill(&mut self) {
        self.signal("KILL");
        self.child.wait().unwrap();
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        // A stopped process must be continued to die of anything but SIGKILL; SIGKILL works.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! grpc-go's proxyless client (`interop/gocp/grpcpeer client`) and ours side by side on the
//! same `helloworld.Greeter/SayHello` calls, and the in-process gRPC backends both call: an
//! echo, a flaky echo, and a holding echo whose held calls the test counts (to load a backend
//! with requests in flight, then see where the next calls go or whether they are admitted).

use super::{PATIENCE, gocp, istio::TARGET};
use http_body_util::BodyExt;
use mesh_examples::greeter::{GreeterClient, HelloRequest};
use mesh_tower::Mesh;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;

/// Outcomes of a batch of calls: `reply <message>` or the gRPC code's name, with counts.
pub type Outcomes = BTreeMap<String, usize>;

/// The metadata that makes a holding backend hold a call.
pub const HOLD: (&str, &str) = ("x-hold", "1");

/// grpc-go's client command for `n` calls to `target` with `args`.
fn grpcpeer_client(bootstrap: &Path, target: &str, n: usize, args: &[String]) -> Command {
    let mut cmd = Command::new(gocp::grpc_go_peer_binary());
    cmd.args(["client", "-target", target, "-n", &n.to_string()])
        .args(args)
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .stderr(Stdio::inherit());
    cmd
}

/// Runs grpc-go's client for `n` calls to `target` with `args`; its stdout.
async fn grpcpeer_output(bootstrap: &Path, target: &str, n: usize, args: Vec<String>) -> String {
    let mut cmd = grpcpeer_client(bootstrap, target, n, &args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run grpcpeer"))
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The outcomes on grpcpeer's `RESULT` line.
fn result_line(text: &str) -> Outcomes {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("grpcpeer client said nothing: {text}"));
    outcomes(line)
}

/// grpc-go's client: `n` calls to `target` with `headers`, through its xDS stack.
pub async fn grpc_go(
    bootstrap: &Path,
    target: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> Outcomes {
    let args = headers
        .iter()
        .flat_map(|(k, v)| ["-header".to_owned(), format!("{k}={v}")])
        .collect();
    result_line(&grpcpeer_output(bootstrap, target, n, args).await)
}

/// grpc-go's client: `n` calls per value of metadata `key`, one process and connection for
/// all (its xDS setup takes seconds); the outcomes by value.
pub async fn grpc_go_each(
    bootstrap: &Path,
    target: &str,
    n: usize,
    key: &str,
    values: &[String],
) -> BTreeMap<String, Outcomes> {
    let each = vec!["-each".to_owned(), format!("{key}={}", values.join(","))];
    let text = grpcpeer_output(bootstrap, target, n, each).await;
    let mut by_value = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("EACH ")) {
        let (value, json) = line.split_once(' ').unwrap();
        by_value.insert(value.to_owned(), outcomes(json));
    }
    assert_eq!(by_value.len(), values.len(), "grpcpeer client said: {text}");
    by_value
}

/// grpc-go's client with `hold` calls left in flight at `held`'s backends: once the backends
/// hold them all, `n` more calls. The held calls by backend at that moment, and the outcomes
/// of the `n` (the held ones end with the process).
pub async fn grpc_go_holding(
    bootstrap: &Path,
    target: &str,
    held: &Held,
    hold: usize,
    n: usize,
) -> (BTreeMap<SocketAddr, usize>, Outcomes) {
    let args = ["-hold".to_owned(), hold.to_string()];
    let mut child = grpcpeer_client(bootstrap, target, n, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start grpcpeer");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (stdout, first) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (stdout, line)
    })
    .await
    .unwrap();
    assert_eq!(first.trim(), "HOLDING", "grpcpeer client said: {first}");
    let at_hold = held.until(hold).await;
    writeln!(stdin, "go").unwrap();
    let text = tokio::task::spawn_blocking(move || {
        let text: Vec<String> = stdout.lines().map(Result::unwrap).collect();
        child.wait().unwrap();
        text.join("\n")
    })
    .await
    .unwrap();
    held.until(0).await;
    (at_hold, result_line(&text))
}

/// A `RESULT`/`EACH` JSON object as outcomes.
fn outcomes(json: &str) -> Outcomes {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut outcomes = Outcomes::new();
    for (msg, count) in v["replies"].as_object().unwrap() {
        outcomes.insert(format!("reply {msg}"), count.as_u64().unwrap() as usize);
    }
    for (code, count) in v["codes"].as_object().unwrap() {
        if code != "OK" {
            outcomes.insert(code.clone(), count.as_u64().unwrap() as usize);
        }
    }
    outcomes
}

/// Ours: the same calls through `Mesh::channel` with tonic.
pub async fn mesh_calls(mesh: &Mesh, n: usize, headers: &[(&'static str, &str)]) -> Outcomes {
    let mut client = GreeterClient::new(mesh.channel(TARGET));
    let mut outcomes = Outcomes::new();
    for _ in 0..n {
        let mut req = tonic::Request::new(HelloRequest { name: "a".into() });
        for (k, v) in headers {
            req.metadata_mut().insert(*k, v.parse().unwrap());
        }
        let key = match client.say_hello(req).await {
            Ok(reply) => format!("reply {}", reply.into_inner().message),
            Err(status) => format!("{:?}", status.code()),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    outcomes
}

/// Ours, as [`grpc_go_holding`]: `hold` calls left in flight, then `n` calls; the held ones
/// are cancelled after (and the backends seen to let go of them).
pub async fn mesh_holding(
    mesh: &Mesh,
    held: &Held,
    hold: usize,
    n: usize,
) -> (BTreeMap<SocketAddr, usize>, Outcomes) {
    let client = GreeterClient::new(mesh.channel(TARGET));
    let calls: Vec<_> = (0..hold)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut req = tonic::Request::new(HelloRequest { name: "a".into() });
                req.metadata_mut().insert(HOLD.0, HOLD.1.parse().unwrap());
                let _ = client.say_hello(req).await;
            })
        })
        .collect();
    let at_hold = held.until(hold).await;
    let outcomes = mesh_calls(mesh, n, &[]).await;
    for call in calls {
        call.abort();
    }
    held.until(0).await;
    (at_hold, outcomes)
}

/// The calls that holding backends hold right now, by backend: what a test awaits.
#[derive(Clone, Debug, Default)]
pub struct Held(Arc<watch::Sender<BTreeMap<SocketAddr, usize>>>);

impl Held {
    /// No backend yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend that holds every call carrying [`HOLD`] until the caller cancels it, and
    /// echoes the others.
    pub async fn server(&self) -> SocketAddr {
        serve(Behaviour::Holding(self.clone())).await
    }

    /// Waits (bounded) until `total` calls are held in all; how they are spread.
    pub async fn until(&self, total: usize) -> BTreeMap<SocketAddr, usize> {
        let mut rx = self.0.subscribe();
        let waited = tokio::time::timeout(
            PATIENCE,
            rx.wait_for(|by| by.values().sum::<usize>() == total),
        )
        .await;
        match waited {
            Ok(Ok(seen)) => seen.clone(),
            _ => panic!("{total} calls held: {:?}", *self.0.borrow()),
        }
    }

    fn add(&self, addr: SocketAddr, delta: isize) {
        self.0.send_modify(|by| {
            let n = by.entry(addr).or_default();
            *n = n.saturating_add_signed(delta);
        });
    }
}

/// One held call: counted while it lives.
struct HeldCall(Held, SocketAddr);

impl Drop for HeldCall {
    fn drop(&mut self) {
        self.0.add(self.1, -1);
    }
}

enum Behaviour {
    Echo,
    Flaky,
    Holding(Held),
}

/// A plaintext gRPC server answering SayHello with its address (the mesh's echo).
pub async fn grpc_echo() -> SocketAddr {
    serve(Behaviour::Echo).await
}

/// The echo; with `flaky`, it answers `UNAVAILABLE` (trailers-only) to every other call it
/// gets, the first included: a flaky instance whose failures a retry always gets past.
pub async fn grpc_server(flaky: bool) -> SocketAddr {
    serve(if flaky {
        Behaviour::Flaky
    } else {
        Behaviour::Echo
    })
    .await
}

async fn serve(behaviour: Behaviour) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let behaviour = Arc::new(behaviour);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (calls, behaviour) = (calls.clone(), behaviour.clone());
            let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let held = match &*behaviour {
                    Behaviour::Holding(held) if req.headers().get(HOLD.0).is_some() => {
                        held.add(addr, 1);
                        Some(HeldCall(held.clone(), addr))
                    }
                    _ => None,
                };
                let fail = matches!(*behaviour, Behaviour::Flaky) && n.is_multiple_of(2);
                async move {
                    if let Some(_call) = held {
                        // Until the caller resets the stream or the connection goes.
                        std::future::pending::<()>().await;
                    }
                    if !fail {
                        return mesh_examples::echo::handle(addr, req).await;
                    }
                    let res = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "14")
                        .header("grpc-message", "flaky")
                        .body(http_body_util::Empty::new().boxed_unsync())
                        .unwrap();
                    Ok(res)
                }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// How many of `seen` were replies (of any backend).
pub fn replied(seen: &Outcomes) -> usize {
    seen.iter()
        .filter(|(k, _)| k.starts_with("reply "))
        .map(|(_, n)| n)
        .sum()
}

/// The outcome key of a reply from the echo at `addr` to a caller without identity.
pub fn reply(addr: SocketAddr, who: &str) -> String {
    format!("reply {addr} /helloworld.Greeter/SayHello {who}\n")
}

//! What the side-by-side load harnesses share: each contender is its own process pinned to a
//! CPU, drives a closed loop for a fixed time and prints one `RESULT` line (requests, errors,
//! latency quantiles, its own CPU from `/proc`, RSS), which the orchestrator parses into a row.
//! Servers print `ADDR <addr>` when they listen.

use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CPU of the echo servers (and of a server-side sidecar).
pub const SERVER_CPU: &str = "0";
/// CPU of every client and of a client-side sidecar.
pub const CLIENT_CPU: &str = "1";
/// Linux's clock ticks per second for `/proc/*/stat` CPU times.
pub const TICK_US: u64 = 10_000;

/// `program` pinned to `cpu` (util-linux `taskset`, present on any Linux this runs on).
pub fn pinned(cpu: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu).arg(program);
    cmd
}

/// Pins every thread of the running process `pid` to `cpu`.
pub fn pin_pid(cpu: &str, pid: u32) {
    let status = Command::new("taskset")
        .args(["-a", "-c", "-p", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux) pins the contenders");
    assert!(status.success(), "taskset failed for pid {pid}");
}

/// User + system CPU ticks of process `pid` (`"self"` for this one).
pub fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// The user-space part of [`cpu_ticks`] (utime alone): what the process's own code spent,
/// without the kernel's network stack and wakeups.
pub fn user_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    (rest.split_whitespace().nth(11))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// This process's resident memory.
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One contender's measurements (`requests`, `errors`, `secs`, `p50`…, `cpu_us`, `rss_kb`, and
/// what the orchestrator adds, such as `sidecar_cpu_us`).
pub type Row = HashMap<String, f64>;

/// The median (sorts `xs`).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Runs `concurrency` loops of `send` with a `size`-byte body for `secs` after a warm-up (which
/// must succeed), then prints the `RESULT` line. `send` answers with the echoed length.
pub async fn closed_loop<F, Fut>(concurrency: usize, secs: f64, size: usize, send: F)
where
    F: Fn(Bytes) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<usize, String>> + Send,
{
    let body = Bytes::from(vec![b'x'; size]);
    // Warm up: connections open, config compiled.
    for _ in 0..20 {
        send(body.clone()).await.unwrap();
    }
    let (cpu0, user0) = (cpu_ticks("self"), user_ticks("self"));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (send, body) = (send.clone(), body.clone());
        tasks.spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                match send(body.clone()).await {
                    Ok(n) if n == body.len() => lat.push(t.elapsed().as_micros() as u64),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for (l, e) in tasks.join_all().await {
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = (cpu_ticks("self") - cpu0) * TICK_US;
    let user_us = (user_ticks("self") - user0) * TICK_US;
    lat.sort_unstable();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "RESULT requests={} errors={errors} secs={elapsed:.3} p50={} p90={} p99={} max={} cpu_us={cpu_us} user_us={user_us} rss_kb={}",
        lat.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        lat.last().copied().unwrap_or(0),
        rss_kb()
    );
}

/// Runs `cmd` (a client process) to its end and parses its `RESULT` line.
pub fn run_result(contender: &str, mut cmd: Command) -> Row {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("client process");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("{contender} produced no result: {text}"));
    line[7..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0.0)))
        .collect()
}

/// Starts this bench's own executable as a server (`cmd` already set up: pinned, its role in
/// the environment) and reads the `ADDR` it prints.
pub fn spawn_server(mut cmd: Command) -> (Child, SocketAddr) {
    let mut server = cmd.stdout(Stdio::piped()).spawn().expect("server process");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("ADDR ")
        .unwrap_or_else(|| panic!("server did not start: {line:?}"))
        .parse()
        .unwrap();
    (server, addr)
}

/// The echo request every contender sends: `POST http://web/echo` with `body`.
pub fn echo_request(body: Bytes) -> http::Request<http_body_util::Full<Bytes>> {
    http::Request::post("http://web/echo")
        .body(http_body_util::Full::new(body))
        .expect("static request parts")
}

/// One request over a bare hyper HTTP/2 connection; the answer's length.
pub async fn send_hyper(
    tx: &hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    body: Bytes,
) -> Result<usize, String> {
    use http_body_util::BodyExt;
    let res = tx
        .clone()
        .send_request(echo_request(body))
        .await
        .map_err(|e| e.to_string())?;
    let b = res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(b.to_bytes().len())
}

/// One request through the mesh stack; the answer's length.
pub async fn send_mesh(
    svc: &mesh_tower::MeshService<http_body_util::Full<Bytes>>,
    body: Bytes,
) -> Result<usize, String> {
    use http_body_util::BodyExt;
    let res = tower::ServiceExt::oneshot(svc.clone(), echo_request(body))
        .await
        .map_err(|e| e.to_string())?;
    let b = res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(b.to_bytes().len())
}

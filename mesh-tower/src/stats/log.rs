//! Access logs: one structured (JSON) line per request, written when its response stream ends,
//! beside its metrics.
//!
//! Why with the metrics: both need the same end of stream (the gRPC status in the trailers,
//! the duration and size of the whole answer), so the line rides in the same record and
//! costs nothing when no log is configured. The line's fields are gathered when the request
//! starts (time, method, authority, path, protocol) and when its answer's head comes (cluster,
//! endpoint, the peer's identity); allocation happens only for requests that are logged.

use super::Outcome;
use super::format::{LogFormat, Values};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Where access log lines go: stdout, a file (appended), or any writer. Cheap to clone; lines
/// from concurrent requests never interleave.
///
/// ```
/// use std::io::Write;
/// use std::sync::{Arc, Mutex};
/// #[derive(Clone, Default)]
/// struct Lines(Arc<Mutex<Vec<u8>>>);
/// impl Write for Lines {
///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().write(b) }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
/// let lines = Lines::default();
/// let log = mesh_tower::telemetry::AccessLog::writer(lines.clone());
/// let telemetry = mesh_tower::telemetry::Telemetry::new(Default::default()).with_access_log(log);
/// # let _ = telemetry;
/// ```
#[derive(Clone)]
pub struct AccessLog {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    /// Envoy's format (none: the JSON line below).
    format: Option<Arc<LogFormat>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Lines to the process's stdout.
    pub fn stdout() -> Self {
        Self::writer(std::io::stdout())
    }

    /// Lines appended to the file at `path` (created if missing).
    pub fn file(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::writer(file))
    }

    /// Lines to `out`, one `write_all` and `flush` per line.
    pub fn writer(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Arc::new(Mutex::new(Box::new(out))),
            format: None,
        }
    }

    /// This log writing its lines in `format` (Envoy's format strings) instead of the
    /// default JSON line.
    ///
    /// ```
    /// use mesh_tower::telemetry::{AccessLog, LogFormat};
    /// let format = LogFormat::text("%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n").unwrap();
    /// let log = AccessLog::stdout().with_format(format);
    /// # let _ = log;
    /// ```
    pub fn with_format(mut self, format: LogFormat) -> Self {
        self.format = Some(Arc::new(format));
        self
    }

    fn write(&self, line: &str) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A log that cannot be written must not fail the request it describes.
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

/// A request's access log line, but for its outcome.
#[derive(Debug)]
pub(crate) struct LogLine {
    pub(crate) sink: AccessLog,
    pub(crate) start_time: SystemTime,
    /// `source` (a client's call) or `destination` (a server's request).
    pub(crate) reporter: &'static str,
    pub(crate) method: http::Method,
    pub(crate) authority: Option<String>,
    pub(crate) path: Option<http::uri::PathAndQuery>,
    pub(crate) protocol: http::Version,
    pub(crate) upstream_cluster: Option<Arc<str>>,
    pub(crate) upstream_host: Option<SocketAddr>,
    /// The other end's verified SPIFFE ID (the server's on a client, the caller's on a server).
    pub(crate) peer: Option<String>,
    /// The caller's and our address (servers).
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    /// The values of the headers the format names (request ones now, response ones at the
    /// answer).
    request_headers: Vec<Option<String>>,
    response_headers: Vec<Option<String>>,
}

impl LogLine {
    /// A line for `req`, starting now.
    pub(crate) fn start<B>(
        sink: &AccessLog,
        reporter: &'static str,
        req: &http::Request<B>,
    ) -> Box<Self> {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        let request_headers = match &sink.format {
            None => Vec::new(),
            Some(f) => (f.request_headers.iter())
                .map(|h| match h.as_str() {
                    ":method" => Some(req.method().as_str().to_owned()),
                    ":path" => req.uri().path_and_query().map(|p| p.as_str().to_owned()),
                    ":authority" => authority.clone(),
                    ":scheme" => req.uri().scheme_str().map(str::to_owned),
                    h => header(req.headers(), h),
                })
                .collect(),
        };
        Box::new(LogLine {
            request_headers,
            response_headers: Vec::new(),
            remote: None,
            local: None,
            sink: sink.clone(),
            start_time: SystemTime::now(),
            reporter,
            method: req.method().clone(),
            authority,
            path: req.uri().path_and_query().cloned(),
            protocol: req.version(),
            upstream_cluster: None,
            upstream_host: None,
            peer: None,
        })
    }

    /// Keeps the response headers the format names.
    pub(crate) fn response(&mut self, headers: &http::HeaderMap) {
        if let Some(f) = &self.sink.format {
            self.response_headers = (f.response_headers.iter())
                .map(|h| header(headers, h))
                .collect();
        }
    }

    /// Writes the line with the request's outcome.
    pub(crate) fn write(&self, outcome: Outcome, millis: f64, bytes: u64) {
        if let Some(format) = &self.sink.format {
            let protocol = match self.protocol {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_11 => "HTTP/1.1",
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_3 => "HTTP/3",
                _ => "-",
            };
            let line = format.render(&Values {
                start_time: &rfc3339(self.start_time),
                duration_ms: millis as u64,
                request_headers: &self.request_headers,
                response_headers: &self.response_headers,
                protocol,
                code: outcome.code,
                flags: &outcome.flags.as_str(),
                grpc: outcome.grpc,
                bytes_sent: bytes,
                upstream_host: self.upstream_host,
                upstream_cluster: self.upstream_cluster.as_deref(),
                peer: self.peer.as_deref(),
                client_side: self.reporter == "source",
                remote: self.remote,
                local: self.local,
            });
            self.sink.write(&line);
            return;
        }
        let mut line = serde_json::json!({
            "start_time": rfc3339(self.start_time),
            "reporter": self.reporter,
            "method": self.method.as_str(),
            "authority": self.authority,
            "path": self.path.as_ref().map(|p| p.as_str()),
            "protocol": format!("{:?}", self.protocol),
            "response_code": outcome.code,
            "grpc_status": outcome.grpc,
            "response_flags": outcome.flags.as_str(),
            "upstream_cluster": self.upstream_cluster.as_deref(),
            "upstream_host": self.upstream_host.map(|h| h.to_string()),
            "duration_ms": (millis * 1000.0).round() / 1000.0,
            "response_bytes": bytes,
            "peer_identity": self.peer,
        })
        .to_string();
        line.push('\n');
        self.sink.write(&line);
    }
}

/// A header's value (lossy UTF-8), if present.
fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// `2026-12-02T03:04:05.678Z` (UTC, milliseconds), without a date crate: days since the
/// epoch to a civil date (Howard Hinnant's algorithm).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

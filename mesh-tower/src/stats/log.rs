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
use mesh_core::config::listener::{AccessLogConfig, AccessLogFilter};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

/// A log's writer, shared by its clones (and by logs of one path, see
/// [`AccessLog::from_config`]).
type Out = Mutex<Box<dyn Write + Send>>;

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
    out: Arc<Out>,
    /// Envoy's format (none: the JSON line below).
    format: Option<Arc<LogFormat>>,
    /// Which requests are written (none: all).
    filter: Option<Arc<AccessLogFilter>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Lines to the process's stdout, buffered and flushed every second (as Envoy flushes its
    /// access logs on a timer rather than per line: a write per request costs a system call).
    pub fn stdout() -> Self {
        Self::buffered(std::io::stdout())
    }

    /// Lines appended to the file at `path` (created if missing), buffered and flushed every
    /// second.
    pub fn file(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::buffered(file))
    }

    /// The log a listener's config names (`access_log` on a listener, from YAML or an xDS
    /// HttpConnectionManager): `/dev/stdout`, `/dev/stderr` or a file, in the config's format.
    /// Logs of one path share one writer (and buffer) in the process, so lines of different
    /// listeners never interleave inside a line; only the format is each log's own.
    ///
    /// ```
    /// use mesh_core::config::listener::AccessLogConfig;
    /// use mesh_tower::telemetry::AccessLog;
    /// let config = AccessLogConfig {
    ///     path: "/dev/stdout".into(),
    ///     text_format: Some("%REQ(:METHOD)% %RESPONSE_CODE%\n".into()),
    ///     ..AccessLogConfig::default()
    /// };
    /// let log = AccessLog::from_config(&config).unwrap();
    /// # let _ = log;
    /// ```
    pub fn from_config(config: &AccessLogConfig) -> Result<Self, String> {
        static OPEN: Mutex<Vec<(String, Weak<Out>)>> = Mutex::new(Vec::new());
        let out = {
            let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|(_, w)| w.strong_count() > 0);
            match open
                .iter()
                .find_map(|(p, w)| (*p == config.path).then(|| w.upgrade()))
            {
                Some(Some(out)) => out,
                _ => {
                    let log = match config.path.as_str() {
                        "/dev/stdout" => Self::stdout(),
                        "/dev/stderr" => Self::buffered(std::io::stderr()),
                        path => Self::file(path)
                            .map_err(|e| format!("access log {path:?} cannot be opened: {e}"))?,
                    };
                    open.push((config.path.clone(), Arc::downgrade(&log.out)));
                    log.out
                }
            }
        };
        let format = match (&config.text_format, &config.json_format) {
            (Some(text), _) => Some(LogFormat::text(text)?),
            (None, Some(json)) => {
                let text = serde_json::to_string(json).map_err(|e| e.to_string())?;
                Some(LogFormat::json(&text)?)
            }
            (None, None) => None,
        };
        Ok(Self {
            out,
            format: format.map(Arc::new),
            filter: config.filter.clone().map(Arc::new),
        })
    }

    /// Lines to `out` through a 64 KiB buffer, flushed when full and every second by a thread
    /// that ends with the last clone of the log.
    fn buffered(out: impl Write + Send + 'static) -> Self {
        let log = Self::writer(std::io::BufWriter::with_capacity(64 * 1024, out));
        let weak = Arc::downgrade(&log.out);
        let flusher = std::thread::Builder::new()
            .name("mesh-access-log".into())
            .spawn(move || {
                while let Some(out) = {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    weak.upgrade()
                } {
                    let _ = out.lock().unwrap_or_else(|e| e.into_inner()).flush();
                }
            });
        if let Err(e) = flusher {
            tracing::warn!(error = %e, "no access log flusher: lines are written when the buffer fills");
        }
        log
    }

    /// Lines to `out`, one `write_all` and `flush` per line (buffer in `out` if that is too
    /// many writes).
    pub fn writer(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Arc::new(Mutex::new(Box::new(out))),
            format: None,
            filter: None,
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

    /// This log writing only the requests `filter` passes (Envoy's access log filters).
    ///
    /// ```
    /// use mesh_core::config::listener::{AccessLogFilter, CompareOp, Comparison};
    /// use mesh_tower::telemetry::AccessLog;
    /// let errors_only = AccessLogFilter::StatusCode(Comparison { op: CompareOp::Ge, value: 400 });
    /// let log = AccessLog::stdout().with_filter(errors_only);
    /// # let _ = log;
    /// ```
    pub fn with_filter(mut self, filter: AccessLogFilter) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Writes out what is buffered (tests read the file at once instead of waiting for the
    /// flusher).
    #[cfg(test)]
    pub(crate) fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }

    fn write(&self, line: &str) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A log that cannot be written must not fail the request it describes.
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

/// A request's authority, kept by reference count (the URI's, else the `Host` header's,
/// which is checked to be text when kept).
#[derive(Debug)]
pub(crate) enum Authority {
    Uri(http::uri::Authority),
    Host(http::HeaderValue),
}

impl Authority {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Authority::Uri(a) => a.as_str(),
            Authority::Host(h) => h.to_str().unwrap_or_default(),
        }
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
    pub(crate) authority: Option<Authority>,
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
        let authority = match req.uri().authority() {
            Some(a) => Some(Authority::Uri(a.clone())),
            None => req
                .headers()
                .get(http::header::HOST)
                .filter(|h| h.to_str().is_ok())
                .map(|h| Authority::Host(h.clone())),
        };
        let request_headers = match &sink.format {
            None => Vec::new(),
            Some(f) => (f.request_headers.iter())
                .map(|h| match h.as_str() {
                    ":method" => Some(req.method().as_str().to_owned()),
                    ":path" => req.uri().path_and_query().map(|p| p.as_str().to_owned()),
                    ":authority" => authority.as_ref().map(|a| a.as_str().to_owned()),
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
        if let Some(filter) = &self.sink.filter
            && !filter.passes(
                outcome.code,
                millis as u64,
                &outcome.flags.as_str(),
                outcome.grpc,
            )
        {
            return;
        }
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
        // Written out by hand, keys sorted as before: building a `serde_json` map per line
        // cost more than the rest of the log.
        use std::fmt::Write as _;
        let mut line = String::with_capacity(384);
        line.push('{');
        field(
            &mut line,
            "authority",
            self.authority.as_ref().map(Authority::as_str),
        );
        let _ = write!(
            line,
            ",\"duration_ms\":{:?}",
            (millis * 1000.0).round() / 1000.0
        );
        let _ = match outcome.grpc {
            Some(g) => write!(line, ",\"grpc_status\":{g}"),
            None => write!(line, ",\"grpc_status\":null"),
        };
        line.push(',');
        field(&mut line, "method", Some(self.method.as_str()));
        line.push(',');
        field(&mut line, "path", self.path.as_ref().map(|p| p.as_str()));
        line.push(',');
        field(&mut line, "peer_identity", self.peer.as_deref());
        line.push(',');
        field(&mut line, "protocol", Some(protocol_name(self.protocol)));
        line.push(',');
        field(&mut line, "reporter", Some(self.reporter));
        let _ = write!(
            line,
            ",\"response_bytes\":{bytes},\"response_code\":{},",
            outcome.code
        );
        field(&mut line, "response_flags", Some(&outcome.flags.as_str()));
        line.push_str(",\"start_time\":\"");
        rfc3339_into(&mut line, self.start_time);
        line.push_str("\",");
        field(
            &mut line,
            "upstream_cluster",
            self.upstream_cluster.as_deref(),
        );
        match self.upstream_host {
            Some(h) => {
                let _ = write!(line, ",\"upstream_host\":\"{h}\"");
            }
            None => line.push_str(",\"upstream_host\":null"),
        }
        line.push_str("}\n");
        self.sink.write(&line);
    }
}

/// `"key":value` with `value` a JSON string (escaped) or `null`.
fn field(line: &mut String, key: &str, value: Option<&str>) {
    line.push('"');
    line.push_str(key);
    line.push_str("\":");
    let Some(v) = value else {
        line.push_str("null");
        return;
    };
    line.push('"');
    for c in v.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if (c as u32) < 0x20 => line.push_str(&format!("\\u{:04x}", c as u32)),
            c => line.push(c),
        }
    }
    line.push('"');
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
    let mut out = String::with_capacity(24);
    rfc3339_into(&mut out, t);
    out
}

/// [`rfc3339`] appended to `out`. The civil date and time of day are worked out once per
/// second (per thread) and reused: a busy log asks for the same second thousands of times.
pub(crate) fn rfc3339_into(out: &mut String, t: SystemTime) {
    use std::cell::RefCell;
    use std::fmt::Write as _;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            text.clear();
            civil(text, secs);
            *cached = secs;
        }
        out.push_str(text);
    });
    let _ = write!(out, ".{:03}Z", since.subsec_millis());
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch (UTC), without a date crate: days since
/// the epoch to a civil date (Howard Hinnant's algorithm).
fn civil(out: &mut String, secs: u64) {
    use std::fmt::Write as _;
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
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    );
}

/// HTTP's version as the log names it (`HTTP/1.1`, `HTTP/2.0`).
fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_fields_are_escaped_as_json_requires() {
        let mut line = String::from("{");
        super::field(&mut line, "a", Some("say \"hi\"\\\n\u{1}é"));
        line.push(',');
        super::field(&mut line, "b", None);
        line.push('}');
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["a"], "say \"hi\"\\\n\u{1}é");
        assert!(v["b"].is_null());
    }
}

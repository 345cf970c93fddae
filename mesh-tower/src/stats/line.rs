//! One request's access log line: what is gathered when the request starts (time, method,
//! authority, path, the headers the formats name) and when its answer's head comes (cluster,
//! endpoint, peer), then written to each log of the chain when its stream ends. Allocation
//! happens only for requests that are logged.

use super::Outcome;
use super::format::Values;
use super::log::AccessLog;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

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
    request_headers: Headers,
    response_headers: Headers,
    /// The same for each further log of the sink's chain (empty: one log, no allocation).
    more: Vec<(Headers, Headers)>,
}

/// The values of the headers a format names, in its order.
type Headers = Vec<Option<String>>;

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
        let wanted = |log: &AccessLog| match &log.format {
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
        let request_headers = wanted(sink);
        let more = sink
            .chain()
            .skip(1)
            .map(|l| (wanted(l), Vec::new()))
            .collect();
        Box::new(LogLine {
            request_headers,
            response_headers: Vec::new(),
            more,
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

    /// Keeps the response headers the formats name.
    pub(crate) fn response(&mut self, headers: &http::HeaderMap) {
        let wanted = |log: &AccessLog| match &log.format {
            None => Vec::new(),
            Some(f) => (f.response_headers.iter())
                .map(|h| header(headers, h))
                .collect(),
        };
        self.response_headers = wanted(&self.sink);
        for (log, (_, response)) in self.sink.chain().skip(1).zip(&mut self.more) {
            *response = wanted(log);
        }
    }

    /// Writes the request's line to each log of the chain, with its outcome.
    pub(crate) fn write(&self, outcome: Outcome, millis: f64, bytes: u64) {
        self.write_to(
            &self.sink,
            (&self.request_headers, &self.response_headers),
            outcome,
            millis,
            bytes,
        );
        for (log, (request, response)) in self.sink.chain().skip(1).zip(&self.more) {
            self.write_to(log, (request, response), outcome, millis, bytes);
        }
    }

    /// Writes the line to `sink`, with the headers its format named.
    fn write_to(
        &self,
        sink: &AccessLog,
        (request_headers, response_headers): (&[Option<String>], &[Option<String>]),
        outcome: Outcome,
        millis: f64,
        bytes: u64,
    ) {
        if let Some(filter) = &sink.filter
            && !filter.passes(
                outcome.code,
                millis as u64,
                &outcome.flags.as_str(),
                outcome.grpc,
            )
        {
            return;
        }
        if let Some(format) = &sink.format {
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
                request_headers,
                response_headers,
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
            sink.write(&line);
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
        sink.write(&line);
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
